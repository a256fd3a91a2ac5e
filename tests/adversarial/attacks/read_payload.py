"""Reading the payload: the encoded payload (secret seed, every case, the other runs' inputs)
from a payload file, an environment, a command line or the runner's stdin."""
from hostile import *

hunt_payload()


def custom_kernel(data):
    return wrong(data)
