"""The Docker SDK for Python through flocker: what an SDK user does, checked step by step
(run, list, exec and its raw socket, archives, stats, events, wait, streams, build, errors).

usage: python3 docker_py.py DOCKER_HOST IMAGE PREFIX   (exits non-zero on the first failure)
"""
import io
import os
import sys
import tarfile
import time

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

# streams arrive as they happen, not at the end: logs follow, attach, exec output
ct = client.containers.run(image, "sh -c 'for i in 1 2 3; do echo line$i; sleep 0.3; done'", detach=True, name=f"{prefix}-follow")
try:
    start, seen = time.monotonic(), []
    for line in ct.logs(stream=True, follow=True):
        seen.append((time.monotonic() - start, line.strip()))
    assert [text for _, text in seen] == [b"line1", b"line2", b"line3"], seen
    assert seen[-1][0] - seen[0][0] > 0.4, seen  # spread over the run
finally:
    ct.remove(force=True)
ct = client.containers.run(image, "sh -c 'sleep 0.5; echo att1; echo att2'", detach=True, name=f"{prefix}-attach")
try:
    attached = b"".join(ct.attach(stream=True, logs=True))
    assert attached.split() == [b"att1", b"att2"], attached
finally:
    ct.remove(force=True)

# build from a Dockerfile object, then run the tag (it lands where it was built)
tag = f"{prefix}-built:1"
built, _ = client.images.build(fileobj=io.BytesIO(f"FROM {image}\nRUN echo built > /b\nCMD cat /b\n".encode()), tag=tag, rm=True)
assert tag in built.tags, built.tags
assert client.containers.run(tag, remove=True) == b"built\n"
client.images.remove(tag)

try:
    client.containers.get(f"{prefix}-nothere")
    raise AssertionError("a missing container was found")
except docker.errors.NotFound as err:
    assert "No such container" in str(err.explanation), err.explanation
print("ok")
