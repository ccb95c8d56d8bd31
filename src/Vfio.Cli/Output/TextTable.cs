namespace Vfio.Cli.Output;

/// <summary>A table for people: a header row and rows of cells, each column as wide as its widest cell.</summary>
internal sealed class TextTable(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public int RowCount => _rows.Count;

    public void Add(params string?[] cells)
    {
        if (cells.Length != headers.Length)
        {
            throw new ArgumentException($"A row of this table has {headers.Length} cells, not {cells.Length}.", nameof(cells));
        }
        _rows.Add([.. cells.Select(c => c ?? "-")]);
    }

    /// <summary>Writes the table, columns separated by two spaces, the last one not padded.</summary>
    public void WriteTo(TextWriter writer, string indent = "")
    {
        int[] widths = [.. headers.Select((h, i) => _rows.Select(r => r[i].Length).Append(h.Length).Max())];
        Write(writer, indent, headers, widths);
        foreach (var row in _rows)
        {
            Write(writer, indent, row, widths);
        }
    }

    private static void Write(TextWriter writer, string indent, string[] cells, int[] widths)
    {
        var line = new System.Text.StringBuilder(indent);
        for (int i = 0; i < cells.Length; i++)
        {
            line.Append(i == cells.Length - 1 ? cells[i] : cells[i].PadRight(widths[i] + 2));
        }
        writer.WriteLine(line.ToString().TrimEnd());
    }
}
