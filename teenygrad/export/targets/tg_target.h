/* What a test or demo program sees of the board it runs on: write text out, and main() returns the exit status.
   Implemented by mps2/startup.c (Cortex-M under QEMU, semihosting) and host/start.c (Linux, raw syscalls). */
#ifndef TG_TARGET_H
#define TG_TARGET_H
void tg_write(const char *text);     /* a NUL-terminated string to the host's stdout */
void tg_exit(int status);            /* end the program with this status */
int main(void);
#endif
