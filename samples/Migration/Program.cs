using MigrationSample;

// Migration             a round trip between two migratable devices of the simulated kernel
// Migration --mtty      the same between two serial cards of the simulated kernel's mtty
// Migration --mtty --real   between two cards of the kernel's mtty sample driver (Linux 6.7+, mtty loaded)
string[] options = [.. args.Order(StringComparer.Ordinal)];
switch (options)
{
    case []:
        Console.WriteLine("VFIO migration round trip on the simulated kernel (Vfio.Testing)");
        return await MigrationProgram.RunAsync(Console.Out);
    case ["--mtty"]:
        return await MttyMigrationProgram.RunAsync(real: false, Console.Out);
    case ["--mtty", "--real"]:
        return await MttyMigrationProgram.RunAsync(real: true, Console.Out);
    default:
        Console.Error.WriteLine("usage: Migration [--mtty [--real]]");
        return 2;
}
