using MigrationSample;

Console.WriteLine("VFIO migration round trip on the simulated kernel (Vfio.Testing)");
return await MigrationProgram.RunAsync(Console.Out);
