// Multiboot entry, the flat GDT, SSE enabling, and the protected-mode half of AP start-up.
// Everything else is in Swift: kernel_main (BSP) and kernel_ap_main (APs).

#define STACK_SIZE 16384
#define MAX_CPUS 8

#define MB_MAGIC 0x1BADB002
#define MB_FLAGS 0x00000003          // page-align modules, give memory information

    .section .multiboot, "a"
    .p2align 2
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)

    .text
    .code32

// The boot CPU arrives here from the multiboot loader: protected mode, paging off,
// EAX = magic, EBX = physical address of the multiboot information.
    .globl _start
_start:
    cli
    movl $(cpu_stacks + STACK_SIZE), %esp
    movl %eax, %esi
    lgdt gdt_descriptor
    ljmp $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    // Clear .bss (the loader should have); nothing is on the stack yet.
    movl $bss_start, %edi
    movl $bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    cld
    rep stosb
    call enable_sse
    subl $8, %esp                   // keep the stack 16-byte aligned at the call
    pushl %ebx                      // multiboot information
    pushl %esi                      // multiboot magic
    call kernel_main
2:  cli
    hlt
    jmp 2b

// Code generated for i686 uses SSE: let the FPU and SSE instructions run (CR0.EM off,
// CR0.MP on, CR4.OSFXSR and CR4.OSXMMEXCPT on).
enable_sse:
    movl %cr0, %eax
    andl $~0x4, %eax
    orl $0x2, %eax
    movl %eax, %cr0
    movl %cr4, %eax
    orl $0x600, %eax
    movl %eax, %cr4
    fninit
    ret

// An application processor arrives here from the trampoline: protected mode through our
// GDT, paging off, no stack. Turn paging on with the boot CPU's page directory (the kernel
// image is identity-mapped, so the next instruction is still there), take the next boot
// stack, enable SSE, and enter Swift with the CPU's index.
    .globl ap_start32
ap_start32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl ap_boot_cr3, %eax
    movl %eax, %cr3
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0
    movl $1, %eax
    lock xaddl %eax, ap_next_index
    cmpl $MAX_CPUS, %eax
    jae 2b                          // more CPUs than stacks: park this one
    movl %eax, %ebx
    incl %eax
    shll $14, %eax                  // (index + 1) * STACK_SIZE
    addl $cpu_stacks, %eax
    movl %eax, %esp
    call enable_sse
    subl $12, %esp
    pushl %ebx                      // CPU index
    call kernel_ap_main
    jmp 2b

    .data
    .p2align 3
    .globl gdt
gdt:
    .quad 0                         // null
    .quad 0x00CF9A000000FFFF        // 0x08: code, base 0, limit 4 GiB, 32-bit
    .quad 0x00CF92000000FFFF        // 0x10: data, base 0, limit 4 GiB
gdt_end:
    .globl gdt_descriptor
gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .p2align 2
    .globl ap_boot_cr3
ap_boot_cr3:
    .long 0
ap_next_index:
    .long 1                         // the boot CPU is 0

    .bss
    .p2align 12
cpu_stacks:                         // CPU n uses [n * STACK_SIZE, (n + 1) * STACK_SIZE)
    .skip STACK_SIZE * MAX_CPUS
    .p2align 3
    .globl idt
idt:
    .skip 256 * 8
