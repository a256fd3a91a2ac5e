import numpy as np


def custom_kernel(data):
    a, b = data
    out = a + b
    out[-1] = np.nan  # a NaN where the reference has a number
    return out
