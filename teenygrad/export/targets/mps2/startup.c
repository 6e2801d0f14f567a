/* Startup for the Arm MPS2 boards (AN385: Cortex-M3, AN386: Cortex-M4F) as QEMU emulates them.
   The vector table, .data copy and .bss clear, the FPU switched on where the build uses it, and output and exit
   through semihosting (a BKPT 0xAB that QEMU traps; its console goes to the -chardev given to -semihosting-config). */
#include "../tg_target.h"

extern unsigned int __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[], __stack_top[];

enum { SYS_WRITE0 = 0x04, SYS_EXIT_EXTENDED = 0x20, ADP_STOPPED_APPLICATION_EXIT = 0x20026 };

static int semihost_call(int operation, const void *argument) {
  register int r0 __asm__("r0") = operation;
  register const void *r1 __asm__("r1") = argument;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void tg_write(const char *text) { semihost_call(SYS_WRITE0, text); }

void tg_exit(int status) {
  unsigned int block[2] = {ADP_STOPPED_APPLICATION_EXIT, (unsigned int)status};
  for (;;) semihost_call(SYS_EXIT_EXTENDED, block);
}

void Reset_Handler(void) {
  /* volatile keeps the compiler from turning these loops into memcpy/memset calls before the data exists */
  volatile unsigned int *dst = __data_start;
  for (const unsigned int *src = __data_load; dst < __data_end;) *dst++ = *src++;
  for (dst = __bss_start; dst < __bss_end;) *dst++ = 0;
#if defined(__ARM_FP)
  /* CP10 and CP11 full access (CPACR), before the first floating-point instruction */
  *(volatile unsigned int *)0xE000ED88u |= 0xFu << 20;
  __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
  tg_exit(main());
}

void Fault_Handler(void) {
  tg_write("\nfault: the program took a hard fault or an unexpected exception\n");
  tg_exit(70);
}

typedef void (*vector_t)(void);
__attribute__((section(".vectors"), used)) static const vector_t vector_table[16] = {
  (vector_t)__stack_top, Reset_Handler,
  Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,   /* NMI, HardFault, MemManage, BusFault, UsageFault */
  0, 0, 0, 0,
  Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,                 /* SVC, DebugMon, -, PendSV, SysTick */
};
