#include "task.h"

__global__ void sub_kernel(const float* a, const float* b, float* c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] - b[i];  // wrong operation
}

void vectoradd(const float* a, const float* b, float* c, int n) {
    sub_kernel<<<(n + 255) / 256, 256>>>(a, b, c, n);
}
