#pragma once

// c[i] = a[i] + b[i] for i < n; a, b, c are device pointers. Launch on the default stream.
void vectoradd(const float* a, const float* b, float* c, int n);
