using NvmeDriver;

return await NvmeDriverProgram.RunAsync(args, Console.Out).ConfigureAwait(false);
