// The C face of the kernel: the instructions Swift cannot spell (port I/O, control
// registers, invlpg, pause, hlt), the layouts the hardware defines (IDT gate, trap frame,
// multiboot information), and the symbols the assembly and the linker script provide.
// Imported into Swift as the clang module `KernelSupport`.
#ifndef SFBUF_KERNEL_H
#define SFBUF_KERNEL_H

#include <stddef.h>
#include <stdint.h>

// MARK: Layout shared with the assembly

/// Bytes of each CPU's boot stack (boot.S).
#define KERNEL_STACK_SIZE 16384
/// CPUs the boot stacks and per-CPU tables are sized for.
#define KERNEL_MAX_CPUS 8
/// Bytes of one interrupt entry stub (isr.S); stub `n` is at `isr_stubs + n * ISR_STUB_SIZE`.
#define ISR_STUB_SIZE 16
/// Physical address the AP trampoline is copied to; the start-up IPI vector is its page.
#define AP_TRAMPOLINE_ADDRESS 0x8000
/// Flat 32-bit code segment selector of the GDT (boot.S).
#define KERNEL_CODE_SELECTOR 0x08

/// Registers as isr.S leaves them on the stack for `kernel_trap`: `pushal`, then the vector
/// and error code the stub pushed, then what the CPU pushed.
struct trap_frame {
  uint32_t edi, esi, ebp, esp_at_pushal, ebx, edx, ecx, eax;
  uint32_t vector, error_code;
  uint32_t eip, cs, eflags;
};

/// One IDT entry: a 32-bit interrupt gate.
struct idt_gate {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t zero;
  uint8_t type_attributes;
  uint16_t offset_high;
};

/// The part of the multiboot (version 1) information the kernel reads.
struct multiboot_info {
  uint32_t flags;
  uint32_t mem_lower;  // KiB below 1 MiB, valid when flags bit 0 is set
  uint32_t mem_upper;  // KiB above 1 MiB, valid when flags bit 0 is set
};

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002u

extern char kernel_start[], kernel_end[];
extern char ap_trampoline_start[], ap_trampoline_end[];
extern char isr_stubs[];
extern struct idt_gate idt[256];
/// Page directory the APs load before turning paging on (boot.S reads it).
extern volatile uint32_t ap_boot_cr3;

static inline uintptr_t kernel_start_address(void) { return (uintptr_t)kernel_start; }
static inline uintptr_t kernel_end_address(void) { return (uintptr_t)kernel_end; }
static inline uintptr_t ap_trampoline_address(void) { return (uintptr_t)ap_trampoline_start; }
static inline size_t ap_trampoline_size(void) {
  return (size_t)(ap_trampoline_end - ap_trampoline_start);
}
static inline uintptr_t isr_stub_address(int vector) {
  return (uintptr_t)isr_stubs + (uintptr_t)vector * ISR_STUB_SIZE;
}
static inline struct idt_gate *idt_gates(void) { return idt; }
static inline void set_ap_boot_cr3(uint32_t cr3) { ap_boot_cr3 = cr3; }

// MARK: Instructions

static inline void outb(uint16_t port, uint8_t value) {
  __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}
static inline uint8_t inb(uint16_t port) {
  uint8_t value;
  __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port));
  return value;
}
static inline void outl(uint16_t port, uint32_t value) {
  __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

static inline uint32_t read_cr0(void) {
  uint32_t v;
  __asm__ volatile("mov %%cr0, %0" : "=r"(v));
  return v;
}
static inline void write_cr0(uint32_t v) {
  __asm__ volatile("mov %0, %%cr0" : : "r"(v) : "memory");
}
static inline uint32_t read_cr2(void) {
  uint32_t v;
  __asm__ volatile("mov %%cr2, %0" : "=r"(v));
  return v;
}
static inline uint32_t read_cr3(void) {
  uint32_t v;
  __asm__ volatile("mov %%cr3, %0" : "=r"(v));
  return v;
}
static inline void write_cr3(uint32_t v) {
  __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory");
}

/// Drops the calling CPU's TLB entry for the page holding `va`.
static inline void invlpg(uintptr_t va) {
  __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory");
}
static inline void cpu_pause(void) { __asm__ volatile("pause"); }
static inline void cpu_halt(void) { __asm__ volatile("hlt"); }
static inline void interrupts_enable(void) { __asm__ volatile("sti" : : : "memory"); }
static inline void interrupts_disable(void) { __asm__ volatile("cli" : : : "memory"); }
static inline void load_idt(const struct idt_gate *base, uint16_t limit) {
  struct __attribute__((packed)) {
    uint16_t limit;
    uint32_t base;
  } idtr = {limit, (uint32_t)(uintptr_t)base};
  __asm__ volatile("lidt %0" : : "m"(idtr));
}
static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

// MARK: Memory the hardware also writes

/// Replaces a page-table entry atomically (`xchg`), so an accessed bit the MMU sets
/// concurrently is never lost, and returns the old entry.
static inline uint32_t pte_exchange(uint32_t *pte, uint32_t value) {
  return __atomic_exchange_n(pte, value, __ATOMIC_SEQ_CST);
}
/// A 32-bit load the compiler neither drops nor merges (MMIO, or memory seen through a
/// mapping whose translation may change under us).
static inline uint32_t volatile_load32(uintptr_t address) {
  return *(volatile uint32_t *)address;
}
static inline void volatile_store32(uintptr_t address, uint32_t value) {
  *(volatile uint32_t *)address = value;
}

// MARK: libc.c

/// Writes one byte to the serial console (also what the Swift runtime prints through).
int putchar(int c);
/// Copies `n` bytes (`rep movsb`).
void *memcpy(void *dst, const void *src, size_t n);
/// Bytes of the heap carved out so far (blocks freed since are reused, not returned).
size_t heap_bytes_used(void);

#endif
