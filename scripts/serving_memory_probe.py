"""Server memory before/after one small Predict declaring z [2000000, 128] and label [2000000] with no values.

    python scripts/serving_memory_probe.py <repository root> <SavedModel dir>

Starts `python -m export.grpc_server` from <repository root> on a free loopback port, reads the server's
VmRSS/VmHWM from /proc before and after the request, prints both and the answer. Linux only.
"""
import os, socket, subprocess, sys, time
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow.core.framework import types_pb2, tensor_shape_pb2

root, model = sys.argv[1], sys.argv[2]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root)
proc = subprocess.Popen([sys.executable, "-m", "export.grpc_server", f"--saved_model={model}", f"--port={port}"],
                        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
proc.stdout.readline()  # "Serving model ..."
def mem():
    fields = dict(line.split(":", 1) for line in open(f"/proc/{proc.pid}/status"))
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024
request = predict_pb2.PredictRequest()
request.model_spec.name = "sagan"
for key, dims, dtype in (("z", [2_000_000, 128], types_pb2.DT_FLOAT), ("label", [2_000_000], types_pb2.DT_INT32)):
    request.inputs[key].dtype = dtype
    request.inputs[key].tensor_shape.dim.extend([tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
time.sleep(2)
before = mem()
channel = grpc.insecure_channel(f"127.0.0.1:{port}")
stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
start = time.monotonic()
try:
    stub.Predict(request, timeout=120); code, details = "OK", ""
except grpc.RpcError as e:
    code, details = e.code().name, e.details()
took = time.monotonic() - start
time.sleep(1)
after = mem()
print(f"{root}: request {request.ByteSize()} bytes -> {code} in {took:.2f} s: {details[:150]!r}")
print(f"  server RSS before {before[0]} MiB (peak {before[1]}), after {after[0]} MiB (peak {after[1]} MiB): "
      f"+{after[0]-before[0]} MiB kept, peak +{after[1]-before[1]} MiB")
proc.terminate(); proc.wait(timeout=30)
