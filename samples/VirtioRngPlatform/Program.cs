using VirtioRngPlatform;

// VirtioRngPlatform           the virtio-mmio entropy device of the simulated kernel
// VirtioRngPlatform --real    the machine's: a virtio-mmio transport (ACPI LNRO0005) bound to vfio-platform
return await VirtioRngProgram.RunAsync(args, Console.Out);
