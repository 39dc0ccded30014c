#include <cblas.h>
// OpenBLAS extensions: thread control, so our own threads and OpenBLAS's never oversubscribe the cores.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
