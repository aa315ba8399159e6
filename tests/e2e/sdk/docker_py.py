"""The Docker SDK for Python through flocker: what an SDK user does, checked step by step.

usage: python3 docker_py.py DOCKER_HOST IMAGE PREFIX   (exits non-zero on the first failure)
"""
import io
import os
import sys
import tarfile

import docker

host, image, prefix = sys.argv[1:4]
client = docker.DockerClient(base_url=host, timeout=60)
assert client.ping() is True

# run, to completion and removed
assert client.containers.run(image, "echo hello-sdk", remove=True) == b"hello-sdk\n"

names = [f"{prefix}-{i}" for i in range(3)]
cts = [client.containers.run(image, "sh -c 'echo started; sleep 60'", detach=True, name=n) for n in names]
try:
    listed = sorted(c.name for c in client.containers.list(filters={"name": prefix}))
    assert listed == names, listed
    for ct in cts:
        ct.reload()
        assert ct.status == "running", ct.status
        result = ct.exec_run(["echo", ct.name])
        assert (result.exit_code, result.output) == (0, f"{ct.name}\n".encode()), result
        assert client.containers.get(ct.name).id == ct.id

    # exec with stdin over the hijacked socket, half-closed: the output still comes back
    ct = cts[1]
    exec_id = client.api.exec_create(ct.id, "cat", stdin=True)["Id"]
    sock = client.api.exec_start(exec_id, socket=True)._sock
    sock.sendall(b"through-the-socket\n")
    sock.shutdown(1)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert data[8:] == b"through-the-socket\n", data  # after the 8-byte stream header

    # archives both ways, byte for byte
    payload = os.urandom(2_000_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("p.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert ct.put_archive("/tmp", buf.getvalue())
    bits, stat = ct.get_archive("/tmp/p.bin")
    assert stat["size"] == len(payload), stat
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
        assert tar.extractfile("p.bin").read() == payload

    assert "memory_stats" in ct.stats(stream=False)

    # events follow a container on whichever host it is; wait reports its exit
    events = client.events(decode=True, filters={"container": cts[2].id})
    cts[2].stop(timeout=0)
    for event in events:
        if event.get("status") == "die":
            events.close()
            break
    assert cts[2].wait()["StatusCode"] == 137

    assert image in [t for i in client.images.list() for t in i.tags]
    assert client.info()["Containers"] >= 3
    assert "Containers" in client.df()
finally:
    for ct in cts:
        ct.remove(force=True)

try:
    client.containers.get(f"{prefix}-nothere")
    raise AssertionError("a missing container was found")
except docker.errors.NotFound as err:
    assert "No such container" in str(err.explanation), err.explanation
print("ok")
