#!/bin/sh
# Entrypoint of the tritonyard Triton image (kserve/image/Dockerfile). Before handing over to the
# NGC entrypoint (which execs tritonserver), it:
#  1. refuses a restricted-API key shorter than 32 characters, or one the kubelet could not
#     expand (the Secret has no key yet): a guessable key would open the model-repository API;
#  2. waits for `<repository>/.upload-complete`, which `make kserve-upload` writes last, so a
#     replica never loads a half-copied repository. TRITONYARD_UPLOAD_WAIT_SECS (default 1200)
#     bounds the wait; 0 skips it, for repositories put there some other way;
#  3. starts the stub supervisor (serving/supervisor.py) in the background. Triton never restarts
#     a Python-backend stub that died; the supervisor watches this process's children (the exec
#     below turns this process into tritonserver) and reloads such a model through the repository
#     API with $TRITON_ADMIN_KEY. TRITONYARD_SUPERVISOR names the script; "off" disables it.
set -eu

repository=/mnt/models
http_port=8000
for arg in "$@"; do
  case "$arg" in
    --model-repository=*) repository=${arg#--model-repository=} ;;
    --http-port=*) http_port=${arg#--http-port=} ;;
    --model-store=*) repository=${arg#--model-store=} ;;
    --http-restricted-api=*:*=* | --grpc-restricted-protocol=*:*=*)
      key=${arg##*=}
      if [ "${#key}" -lt 32 ]; then
        echo "tritonyard: the key of ${arg%%=*} is shorter than 32 characters (or its Secret is not set):" \
          "set it as kserve/base/admin-key-secret.yaml shows" >&2
        exit 64
      fi
      ;;
  esac
done

wait_secs=${TRITONYARD_UPLOAD_WAIT_SECS:-1200}
marker="$repository/.upload-complete"
waited=0
if [ "$wait_secs" -gt 0 ]; then
  until [ -f "$marker" ]; do
    if [ "$waited" -ge "$wait_secs" ]; then
      echo "tritonyard: no $marker after ${wait_secs}s: run \`make kserve-upload\`" >&2
      exit 75
    fi
    if [ $((waited % 60)) -eq 0 ]; then
      echo "tritonyard: waiting for $marker (make kserve-upload writes it when the copy is complete)" >&2
    fi
    sleep 5
    waited=$((waited + 5))
  done
fi

supervisor=${TRITONYARD_SUPERVISOR:-/opt/tritonyard/supervisor.py}
if [ "$supervisor" != off ] && [ -f "$supervisor" ]; then
  python3 "$supervisor" --server-pid "$$" --url "127.0.0.1:${http_port}" &
fi

exec "${TRITONYARD_NEXT_ENTRYPOINT:-/opt/nvidia/nvidia_entrypoint.sh}" "$@"
