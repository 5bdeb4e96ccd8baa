"""Checkpointing policy and the checkpoint function (offload needs CUDA: gpu-marked)."""
import copy

import pytest
import torch
from kernel_testutils import DEVICE, ON_GPU, nf4_llama

from tunesmith.kernels.checkpoint import (
    GiB,
    apply_checkpointing,
    decoder_layers,
    layer_activation_bytes,
    plan_checkpointing,
)

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def _model():
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64)
    base = transformers.AutoModelForCausalLM.from_config(cfg).to(DEVICE)
    return peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                     init_lora_weights=False))


def test_plan_prefers_no_checkpointing_then_fewest_layers():
    m = _model()
    cfg = m.get_base_model().config
    full, ckpt = layer_activation_bytes(cfg, 4096)
    assert full > ckpt > 0
    roomy = plan_checkpointing(m, 4096, free_bytes=80 * GiB)
    assert roomy.checkpointed == 0 and "fits" in roomy.summary()
    tight = plan_checkpointing(m, 4096, "auto", free_bytes=int(GiB + 2.5 * full + 4096 * 32 * 4 + 256 * 2**20 +
                                                                 2.6 * full))
    assert 0 < tight.checkpointed < 4, tight.summary()
    assert plan_checkpointing(m, 4096, "memory").checkpointed == 4


@pytest.mark.parametrize("offload", [False, pytest.param(True, marks=pytest.mark.skipif(not ON_GPU, reason="CUDA"))])
def test_checkpointed_layers_give_the_same_grads(offload):
    stock = _model()
    ours = copy.deepcopy(stock)
    plan = plan_checkpointing(ours, 24, "memory")
    plan.offload = offload
    plan.checkpointed = 3  # layers 0-2 checkpointed, layer 3 not
    apply_checkpointing(ours, plan)
    layers = decoder_layers(ours)
    assert [layer.gradient_checkpointing for layer in layers] == [True, True, True, False]
    calls = []
    from tunesmith.kernels import checkpoint as ck

    orig = ck._CheckpointFunction.forward
    ck._CheckpointFunction.forward = staticmethod(lambda ctx, *a: (calls.append(1), orig(ctx, *a))[1])
    ids = torch.randint(0, 64, (2, 12), device=DEVICE)
    stock.train(), ours.train()
    ls = stock(input_ids=ids, labels=ids).loss
    lo = ours(input_ids=ids, labels=ids).loss
    ls.backward()
    lo.backward()
    ck._CheckpointFunction.forward = staticmethod(orig)
    assert len(calls) == 3  # our checkpoint ran for the three checkpointed layers
    torch.testing.assert_close(lo, ls)
    gs = {n: p.grad for n, p in stock.named_parameters() if p.requires_grad}
    go = {n: p.grad for n, p in ours.named_parameters() if p.requires_grad}
    for n in gs:
        assert go[n] is not None, n
        torch.testing.assert_close(go[n], gs[n], atol=1e-5, rtol=1e-4)


def test_auto_keeps_dequantized_weights_only_when_they_fit():
    """Auto's order: no checkpointing with the NF4 weights kept dequantized, then without them, then
    checkpointing; memory mode never keeps them. The plan's summary says which."""
    from tunesmith.kernels import choose_plan, nf4_cache_bytes

    model, n_params = nf4_llama()
    need = nf4_cache_bytes(model)
    assert need == 2 * n_params
    roomy = choose_plan(model, 4096, "auto", 80 * GiB)
    assert roomy.checkpointed == 0 and roomy.weight_cache_bytes == need
    assert "NF4 weights kept dequantized" in roomy.summary()
    # the least free memory that trains without checkpointing: no room left for the kept weights
    lo, hi = 0, 80 * GiB
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if plan_checkpointing(model, 4096, "auto", free_bytes=mid).checkpointed == 0 else (mid, hi)
    tight = choose_plan(model, 4096, "auto", hi)
    assert tight.checkpointed == 0 and tight.weight_cache_bytes == 0
    assert "kept" not in tight.summary()
    assert choose_plan(model, 4096, "auto", hi + need).weight_cache_bytes == need
    assert choose_plan(model, 4096, "memory", 80 * GiB).weight_cache_bytes == 0
    assert choose_plan(model, 4096, "auto", None).weight_cache_bytes == 0  # no CUDA: nothing to keep


def test_graph_signature_sees_shapes_constants_and_argument_tensors():
    """What decides whether a captured layer backward may be replayed: shapes, dtypes, constants and
    the layer; the argument tensors (RoPE cos/sin...) are collected so replays can refresh them."""
    import functools

    from tunesmith.kernels.layer_graphs import NotGraphable, _rebuild, _spec

    layer = torch.nn.Linear(2, 2)
    cos, sin = torch.randn(1, 8, 4), torch.randn(1, 8, 4)

    def sig(run, rest=()):
        leaves = []
        return (_spec(run, leaves), _spec(tuple(rest), leaves)), leaves

    run = functools.partial(torch.nn.Linear.forward, layer, position_embeddings=(cos, sin), mask=None, use_cache=False)
    a, leaves = sig(run)
    assert leaves[0] is cos and leaves[1] is sin
    same = functools.partial(torch.nn.Linear.forward, layer, position_embeddings=(cos.clone(), sin.clone()),
                             mask=None, use_cache=False)
    assert sig(same)[0] == a  # new tensors of the same shape: the same graph, refreshed
    longer = functools.partial(torch.nn.Linear.forward, layer, position_embeddings=(torch.randn(1, 9, 4), sin),
                               mask=None, use_cache=False)
    assert sig(longer)[0] != a
    other_layer = functools.partial(torch.nn.Linear.forward, torch.nn.Linear(2, 2), position_embeddings=(cos, sin),
                                    mask=None, use_cache=False)
    assert sig(other_layer)[0] != a
    flag = functools.partial(torch.nn.Linear.forward, layer, position_embeddings=(cos, sin), mask=None,
                             use_cache=True)
    assert sig(flag)[0] != a
    twins = [torch.zeros_like(cos), torch.zeros_like(sin)]
    rebuilt = _rebuild(run, iter(twins))
    assert rebuilt.keywords["position_embeddings"][0] is twins[0] and rebuilt.keywords["use_cache"] is False
    with pytest.raises(NotGraphable):
        sig(run, (torch.randn(2, requires_grad=True),))
    with pytest.raises(NotGraphable):
        sig(run, (object(),))


def test_graphs_only_where_host_work_is_what_they_save(monkeypatch):
    """CUDA graphs for checkpointed layers on CUDA in ordinary steps; not without CUDA or checkpointed
    layers, not for long-context steps (their kernels hide the host work and the graph pool would
    reserve tens of GiB), and never with TUNESMITH_CUDA_GRAPHS=0."""
    from tunesmith.kernels.layer_graphs import wants_forward_graphs, wants_graphs

    # forward graphs: offloaded checkpoints only, and not when least memory is the point
    assert wants_forward_graphs(True, offload=True, prefer="auto")
    assert not wants_forward_graphs(True, offload=True, prefer="memory")
    assert not wants_forward_graphs(True, offload=False, prefer="auto")
    assert not wants_forward_graphs(False, offload=True, prefer="speed")
    assert wants_graphs(32, 2 * 2048, cuda=True)
    assert not wants_graphs(32, 2 * 2048, cuda=False)
    assert not wants_graphs(0, 2 * 2048, cuda=True)
    assert not wants_graphs(32, 131072, cuda=True)
    assert not wants_graphs(32, 2 * 2048, cuda=True, prefer="memory")  # least memory: no graph buffers
    assert wants_graphs(32, 2 * 2048, cuda=True, prefer="speed")
    monkeypatch.setenv("TUNESMITH_CUDA_GRAPHS", "0")
    assert not wants_graphs(32, 2 * 2048, cuda=True)


def test_graphs_give_up_when_batch_shapes_keep_changing(caplog):
    """Every new batch shape throws the captured graphs away (and a later step captures again); a run
    whose shapes keep changing stops capturing after MAX_DROPS drops and says so once."""
    from tunesmith.kernels.layer_graphs import MAX_DROPS, LayerGraphs

    graphs = LayerGraphs([])
    graphs.drop()  # nothing captured yet: not counted
    assert graphs.drops == 0 and graphs.off_reason is None
    for i in range(MAX_DROPS):
        graphs.entries[0] = object()  # a captured layer
        graphs.seen[0] = ("shape", i)
        graphs.drop()
        assert not graphs.entries and not graphs.seen
    assert graphs.off_reason == f"batch shapes changed {MAX_DROPS} times"
    assert sum("pad batches to one length" in r.getMessage() for r in caplog.records) == 1
    assert not graphs.want_capture(0, ("shape", 9)) and not graphs.want_capture(0, ("shape", 9))


@pytest.mark.gpu
@pytest.mark.skipif(not ON_GPU, reason="CUDA graphs need CUDA")
@pytest.mark.parametrize("offload", [False, True])
def test_layer_graphs_replay_what_eager_computes(offload):
    """Checkpointed layers with their backward as CUDA graphs (captured on step 2, replayed after)
    give the gradients of the eager checkpoint at every step, with the LoRA weights changing
    between steps, and a new sequence length drops the graphs and runs eagerly."""
    from tunesmith.kernels import patch

    eager, graphed = _model(), None
    graphed = copy.deepcopy(eager)
    for m in (eager, graphed):
        patch(m, mode="on")
        plan = plan_checkpointing(m, 24, "memory")
        plan.offload, plan.graphs = offload, m is graphed
        plan.graph_forward = m is graphed
        apply_checkpointing(m, plan)
        m.train()
    graphs = decoder_layers(graphed)[0]._gradient_checkpointing_func.keywords["graphs"]
    assert graphs is not None
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5) for m in (eager, graphed)]
    torch.manual_seed(3)
    for step, seq in enumerate([12, 12, 12, 12, 16, 12]):
        ids = torch.randint(0, 64, (2, seq), device=DEVICE)
        losses = []
        for m, opt in zip((eager, graphed), opts):
            loss = m(input_ids=ids, labels=ids).loss
            loss.backward()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0])
        ge = {n: p.grad for n, p in eager.named_parameters() if p.requires_grad}
        for n, p in graphed.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, (step, n)
                torch.testing.assert_close(p.grad, ge[n], atol=1e-5, rtol=1e-4, msg=lambda s: f"step {step} {n}: {s}")
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if step == 1:
            assert graphs.captures == 4 and graphs.replays == 0, graphs.off_reason
        if step == 3:
            assert graphs.replays == 8  # steps 2 and 3 replayed every layer
    assert graphs.off_reason is None
    assert graphs.captures == 4 and graphs.replays == 8  # the 16-token step dropped them; 12 again: eager once
    # the first (no-grad) pass of offloaded checkpoints is graphed too; kept inputs are not
    assert (graphs.fwd_captures, graphs.fwd_replays) == ((4, 8) if offload else (0, 0))
