"""Host services over unix sockets: a sandbox that shares the host's filesystem (even read-only)
and runs with the host's root uid underneath can still connect() to root-owned sockets: the
Docker engine (a container with the host's / mounted is root on the host), containerd, D-Bus,
systemd. Only asks for the engine's version (proof, no harm)."""
import socket

from hostile import *

for _path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
              "/run/dbus/system_bus_socket", "/run/systemd/private"):
    try:
        _s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        _s.settimeout(2)
        _s.connect(_path)
    except OSError as _e:
        say(f"{_path}: {_e.strerror}")
        continue
    _answer = b""
    if "docker" in _path:
        with contextlib.suppress(OSError):
            _s.sendall(b"GET /version HTTP/1.0\r\n\r\n")
            _answer = _s.recv(64)
    leak(f"connected to {_path} {_answer[:20]!r}")
    _s.close()


def custom_kernel(data):
    return wrong(data)
