def custom_kernel(data):
    a, b = data
    return (a + b) * 1.001  # 0.1 % off: outside rtol/atol
