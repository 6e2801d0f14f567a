/* Startup for a Linux x86-64 or aarch64 program built with -nostdlib: _start aligns the stack and calls main,
   output and exit are raw system calls. No libc is linked, so this checks the exported code needs none. */
#include "../tg_target.h"

#if defined(__x86_64__)
__asm__(".globl _start\n_start:\n\txor %rbp, %rbp\n\tand $-16, %rsp\n\tcall tg_start_c\n\thlt\n");
static long tg_syscall3(long number, long a, long b, long c) {
  long result;
  __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
  return result;
}
enum { SYS_write = 1, SYS_exit_group = 231 };
#elif defined(__aarch64__)
__asm__(".globl _start\n_start:\n\tmov x29, #0\n\tmov x0, sp\n\tand x0, x0, #-16\n\tmov sp, x0\n\tbl tg_start_c\n");
static long tg_syscall3(long number, long a, long b, long c) {
  register long x8 __asm__("x8") = number, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
  return x0;
}
enum { SYS_write = 64, SYS_exit_group = 94 };
#else
#error "host startup knows x86-64 and aarch64 Linux only"
#endif

void tg_write(const char *text) {
  long length = 0;
  while (text[length]) length++;
  while (length > 0) {
    long written = tg_syscall3(SYS_write, 1, (long)text, length);
    if (written <= 0) break;
    text += written; length -= written;
  }
}

void tg_exit(int status) {
  for (;;) tg_syscall3(SYS_exit_group, status, 0, 0);
}

void tg_start_c(void);
void tg_start_c(void) { tg_exit(main()); }
