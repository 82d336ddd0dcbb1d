// The real-mode start of an application processor. The boot CPU copies the bytes between
// ap_trampoline_start and ap_trampoline_end to AP_TRAMPOLINE_ADDRESS (0x8000) and sends a
// start-up IPI with vector 0x08: the AP starts here in real mode with CS = 0x0800, IP = 0.
// Everything inside is addressed relative to the copy (CS = DS = its segment); the GDT
// and ap_start32 are absolute addresses in the kernel image.

    .section .rodata.ap_trampoline, "a"
    .code16
    .globl ap_trampoline_start, ap_trampoline_end
ap_trampoline_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl trampoline_gdtr - ap_trampoline_start
    movl %cr0, %eax
    orl $1, %eax                    // protected mode, paging still off
    movl %eax, %cr0
    ljmpl $0x08, $ap_start32        // boot.S: into the kernel image

    .p2align 2
trampoline_gdtr:
    .word 23                        // three descriptors
    .long gdt
ap_trampoline_end:
    .code32
