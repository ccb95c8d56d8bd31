using MdevLifecycle;

return await MdevLifecycleProgram.RunAsync(args, Console.Out).ConfigureAwait(false);
