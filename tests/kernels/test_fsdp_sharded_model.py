"""The kernels on a model sharded by FSDP2 (fully_shard on every decoder layer and the decoder); ~25 s.

One process (a gloo group of one): FSDP still keeps each weight as a DTensor shard outside its
unit's forward, gathers it in the forward and again before the backward, and reduce-scatters the
adapter gradients, so patching, the NF4 projections, the checkpoint recompute and the memory plan
meet what they meet on N ranks. The sharded model, patched after fully_shard, gives the loss and
every adapter gradient of the same model patched unsharded. The 2-process run through the trainer
is tests/scheduler/test_fsdp_kernels.py.
"""
import pytest
import torch

from kernel_testutils import DEVICE, nf4_llama

GiB = 1024**3
ALL = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory):
    dist = pytest.importorskip("torch.distributed")
    if dist.is_initialized():
        pytest.skip("a process group is already up in this process")
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _sharded(model):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(DEVICE, (1,))
    decoder = model.base_model.model.model
    for layer in decoder.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(decoder, mesh=mesh)
    return model


def _step(model, ids):
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            g = p.grad
            grads[name] = g.full_tensor() if hasattr(g, "full_tensor") else g
    return loss.detach(), grads


def test_kernels_on_a_sharded_model_match_the_unsharded_one(one_rank_group):
    from tunesmith import kernels as K
    from tunesmith.kernels.model_parts import is_sharded

    storage = torch.float32  # as under FSDP: the packed NF4 bytes stored as the compute dtype
    ref, _ = nf4_llama(layers=2, targets=ALL, random_lora=True, quant_storage=storage)
    ours, _ = nf4_llama(layers=2, targets=ALL, random_lora=True, quant_storage=storage)
    ours = _sharded(ours)
    assert is_sharded(ours) and not is_sharded(ref)

    reports = [K.patch(m, mode="on") for m in (ref, ours)]
    # patched after fully_shard: the probes saw whole shapes, every projection is LoRA-fused
    assert reports[1].swapped == reports[0].swapped
    assert any("2 LoRA-fused QKV/O" in s for s in reports[1].swapped)
    assert any(s.startswith("mlp x2 (2 LoRA-fused)") for s in reports[1].swapped)
    assert any(s.startswith("rms_norm x5") for s in reports[1].swapped)

    # the plan keeps nothing beyond a unit's forward: no dequantized NF4 copy even with room for it
    assert K.choose_plan(ref, 4096, "auto", 80 * GiB).weight_cache_bytes > 0
    assert K.choose_plan(ours, 4096, "auto", 80 * GiB).weight_cache_bytes == 0
    plans = [K.tune_memory(m, 64, prefer="auto") for m in (ref, ours)]
    assert plans[1].checkpointed == 2 and not plans[1].graphs  # no CUDA here: every layer checkpointed
    assert "FSDP: no NF4 weight cache, no CUDA graphs" in plans[1].summary()
    assert "FSDP" not in plans[0].summary()

    ids = torch.randint(0, 64, (1, 24), device=DEVICE)
    for _ in range(2):  # the second step meets FSDP's reused gather buffers and the kept projections
        for m in (ref, ours):
            m.zero_grad(set_to_none=True)
        (loss_ref, g_ref), (loss, g) = _step(ref, ids), _step(ours, ids)
        torch.testing.assert_close(loss, loss_ref, atol=1e-5, rtol=1e-5)
        assert g.keys() == g_ref.keys() and len(g) == 2 * 7 * 2
        for name in g_ref:
            assert g[name] is not None, name
            torch.testing.assert_close(g[name], g_ref[name], atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
