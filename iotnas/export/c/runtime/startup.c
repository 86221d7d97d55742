/* Reset for the semihosted check harness on an MPS2 board: enable the FPU, clear .bss,
 * open the semihosting streams, run main, exit through semihosting with its status.
 * QEMU loads .data straight into RAM, so there is nothing to copy. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __bss_start__, __bss_end__, __stack_top;
extern int main(int argc, char **argv);
extern void initialise_monitor_handles(void);

void Reset_Handler(void);
void Fault_Handler(void);
void _init(void);
void _fini(void);

/* newlib's exit() runs constructors and destructors through these; C has none. */
void _init(void) {}
void _fini(void) {}

void Reset_Handler(void) {
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: full access to CP10 and CP11 (the FPU) */
    __asm volatile("dsb\n\tisb");
    for (uint32_t *p = &__bss_start__; p < &__bss_end__; ++p) *p = 0u;
    initialise_monitor_handles();
    exit(main(0, 0));
}

void Fault_Handler(void) {
    _Exit(99);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, Fault_Handler,
};
