using System.Diagnostics;
using System.Globalization;

namespace Vfio.Samples;

/// <summary>Prints one line per step: its outcome, its time and what it found.</summary>
internal sealed class StepReport(TextWriter output)
{
    /// <summary>How long any one step may wait for the device.</summary>
    public static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    private readonly Stopwatch _total = Stopwatch.StartNew();
    private int _failed;
    private int _passed;
    private string? _skipped;

    public void Title(string text)
    {
        output.WriteLine(text);
        output.WriteLine(new string('-', text.Length));
    }

    public void Detail(string text) => output.WriteLine("         " + text);

    public void Skip(string reason) => _skipped = reason;

    public async Task StepAsync(string name, Func<Task<string>> step)
    {
        _skipped = null;
        var clock = Stopwatch.StartNew();
        string outcome;
        string text;
        try
        {
            text = await step().ConfigureAwait(false);
            outcome = _skipped is null ? "ok" : "skip";
            text = _skipped ?? text;
            _passed++;
        }
#pragma warning disable CA1031 // a failed step is reported and the program goes on to clean up
        catch (Exception e)
        {
            outcome = "FAIL";
            text = e.GetType().Name + ": " + e.Message;
            _failed++;
        }
#pragma warning restore CA1031
        string time = clock.Elapsed.TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture) + " ms";
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[{outcome,4}] {name,-15} {time,10}  {text}"));
    }

    public int Finish()
    {
        string total = _total.Elapsed.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture);
        output.WriteLine(_failed == 0
            ? $"All {_passed} steps passed in {total} ms."
            : $"{_failed} step(s) failed, {_passed} passed, in {total} ms.");
        output.Flush();
        return _failed == 0 ? 0 : 1;
    }
}
