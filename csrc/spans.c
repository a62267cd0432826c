/* Overlap check for the arrays of one call: sort by start, then sweep. A range overlaps an earlier one exactly when it starts before the
 * largest end seen so far; ends are tracked separately for written and
 * read-only ranges, since two read-only ranges may share memory. */
#include <stdlib.h>

#include "fastoptim.h"

static int by_start(const void *a, const void *b)
{
    const fo_span *x = a, *y = b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

/* A dict's arrays are usually allocated in order, so their spans arrive nearly
 * sorted: insertion sort is then linear, and far cheaper than qsort's calls
 * through a comparison pointer at the sizes of a typical model. */
static void sort_spans(fo_span *s, size_t n)
{
    if (n > 64) {
        qsort(s, n, sizeof *s, by_start);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        fo_span x = s[i];
        size_t j = i;
        for (; j > 0 && s[j - 1].lo > x.lo; j--)
            s[j] = s[j - 1];
        s[j] = x;
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
