using EduDriver;

return await EduDriverProgram.RunAsync(args, Console.Out).ConfigureAwait(false);
