/* Overlap check for the arrays of one call: sort by start, then sweep. A range
 * overlaps an earlier one exactly when it starts before the largest end seen so far; ends are tracked separately for written and
 * read-only ranges, since two read-only ranges may share memory. */
#include "fastoptim.h"

/* Shell sort with Ciura's gaps: in place, no calls through a comparison
 * pointer, and near-linear on the nearly sorted spans a dict's arrays often
 * give; qsort costs more at the few dozen spans of a typical model. */
static void sort_spans(fo_span *s, size_t n)
{
    static const size_t gaps[] = {701, 301, 132, 57, 23, 10, 4, 1};
    for (size_t gi = 0; gi < sizeof gaps / sizeof gaps[0]; gi++) {
        const size_t gap = gaps[gi];
        for (size_t i = gap; i < n; i++) {
            fo_span x = s[i];
            size_t j = i;
            for (; j >= gap && s[j - gap].lo > x.lo; j -= gap)
                s[j] = s[j - gap];
            s[j] = x;
        }
    }
}

int fo_spans_disjoint(fo_span *s, size_t n)
{
    uintptr_t end_written = 0, end_read = 0;
    sort_spans(s, n);
    for (size_t i = 0; i < n; i++) {
        if (s[i].lo == s[i].hi)
            continue;
        if (s[i].lo < end_written || (s[i].written && s[i].lo < end_read))
            return 0;
        if (s[i].written) {
            if (s[i].hi > end_written)
                end_written = s[i].hi;
        } else if (s[i].hi > end_read) {
            end_read = s[i].hi;
        }
    }
    return 1;
}
