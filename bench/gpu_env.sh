# Source this on a GPU machine whose image lacks some of Tunesmith's dependencies and has no
# network: installs wheels carried in .whl/ (bitsandbytes, trl, datasets, pydantic, ...) into
# /tmp/site and Tunesmith itself (editable, no dependency resolution).
#   . bench/gpu_env.sh && pytest -m gpu
set -e
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v -i warning || true
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 - <<'PY'
import torch, transformers, peft, triton
print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| triton", triton.__version__,
      "| transformers", transformers.__version__, "| peft", peft.__version__)
PY
set +e
