// Interrupt entry: 256 stubs of ISR_STUB_SIZE (16) bytes each, then one common path into
// Swift's kernel_trap(struct trap_frame *).
//
// The common path saves the general registers (pushal) and, because the Swift handler may
// use SSE registers, the whole FPU/SSE state (fxsave) of the interrupted code.

// Vectors for which the CPU pushes an error code itself.
#define HAS_ERROR_CODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || \
                           (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

    .text
    .code32
    .p2align 4
    .globl isr_stubs
isr_stubs:
    .set vector, 0
    .rept 256
    .p2align 4
    .if HAS_ERROR_CODE(vector)
    .else
    pushl $0                        // uniform frame: a zero error code
    .endif
    pushl $vector
    jmp isr_common
    .set vector, vector + 1
    .endr

isr_common:
    pushal
    cld
    movl %esp, %ebp                 // the trap frame
    subl $512, %esp
    andl $-16, %esp                 // fxsave area: 512 bytes, 16-aligned
    fxsave (%esp)
    subl $12, %esp
    pushl %ebp
    call kernel_trap
    addl $16, %esp
    fxrstor (%esp)
    movl %ebp, %esp
    popal
    addl $8, %esp                   // vector, error code
    iret
