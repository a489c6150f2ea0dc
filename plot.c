/*
 * plot.c - small dependency-free SVG charts for the paper's figures.
 *
 *   svg_lines    line chart of several series over a shared x axis (Figure 3:
 *                the S2Sched sample ratios ω over training steps)
 *   svg_heatmap  a labelled matrix with a colour scale (Figure 2: the
 *                task-by-task routing similarity of TMoLE)
 *
 * Both build the whole document in an RfBuf and write it with
 * rf_write_file_atomic, so a reader never sees half a file.
 */
#include "recfound.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tableau-10 plus three darker tones: 13 distinct colours, one per task. */
static const char *const PALETTE[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                                      "#ff9da7", "#9c755f", "#bab0ac", "#393b79", "#637939", "#843c39"};
enum { N_PALETTE = sizeof PALETTE / sizeof PALETTE[0] };
/* After the palette is used up, series repeat the colours with these dashes. */
static const char *const DASHES[] = {"", "6,3", "2,2", "8,3,2,3"};

/* Text with the five XML special characters escaped. */
static void put_text(RfBuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': buf_append(b, "&amp;", 5); break;
        case '<': buf_append(b, "&lt;", 4); break;
        case '>': buf_append(b, "&gt;", 4); break;
        case '"': buf_append(b, "&quot;", 6); break;
        case '\'': buf_append(b, "&apos;", 6); break;
        default: buf_append(b, s, 1);
        }
    }
}

/* "Nice" tick spacing: 1, 2, 2.5 or 5 times a power of ten, about `target`
 * intervals over [lo, hi]; the axis is widened to whole ticks. */
static double nice_step(double lo, double hi, int target) {
    double raw = (hi - lo) / target, p = pow(10.0, floor(log10(raw))), m = raw / p;
    double f = m < 1.5 ? 1 : m < 2.25 ? 2 : m < 3.5 ? 2.5 : m < 7.5 ? 5 : 10;
    return f * p;
}

/* Decimals needed to print multiples of step exactly enough. */
static int step_decimals(double step) {
    int d = 0;
    while (d < 10 && fabs(step * pow(10.0, d) - round(step * pow(10.0, d))) > 1e-6 * step * pow(10.0, d)) d++;
    return d;
}

static void data_range(const double *v, size_t n, double *lo, double *hi) {
    *lo = INFINITY, *hi = -INFINITY;
    for (size_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < *lo) *lo = v[i];
            if (v[i] > *hi) *hi = v[i];
        }
    if (!(*lo <= *hi)) *lo = 0, *hi = 1;
    if (*lo == *hi) {
        double d = *lo == 0 ? 1 : 0.1 * fabs(*lo);
        *lo -= d, *hi += d;
    }
}

static int finish(RfBuf *b, const char *path) {
    if (!b->data) return rf_error("%s: out of memory building the SVG", path);
    int rc = rf_write_file_atomic(path, b->data, b->len);
    buf_free(b);
    return rc;
}

/* ------------------------------------------------------------ line chart */

int svg_lines(const char *path, const char *title, const char *xlabel, const char *ylabel, int n_series,
              const char *const *names, const double *x, const double *const *y, int n) {
    if (n_series < 0 || n < 0) return rf_error("%s: negative series or point count", path);
    const double W = 900, H = 520, ml = 80, mr = 200, mt = 50, mb = 62;
    const double pw = W - ml - mr, ph = H - mt - mb;

    double xlo, xhi, ylo = INFINITY, yhi = -INFINITY;
    data_range(x, (size_t)n, &xlo, &xhi);
    for (int s = 0; s < n_series; s++) {
        double a, c;
        int any = 0;
        for (int i = 0; i < n; i++) any |= isfinite(y[s][i]);
        if (!any) continue;
        data_range(y[s], (size_t)n, &a, &c);
        if (a < ylo) ylo = a;
        if (c > yhi) yhi = c;
    }
    if (!(ylo <= yhi)) ylo = 0, yhi = 1;
    if (ylo == yhi) ylo -= 0.5, yhi += 0.5;
    double xs = nice_step(xlo, xhi, 8), ys = nice_step(ylo, yhi, 6);
    double y0 = floor(ylo / ys + 1e-9) * ys, y1 = ceil(yhi / ys - 1e-9) * ys;
    double x0 = xlo, x1 = xhi; /* x spans the data exactly; ticks inside */
#define PX(v) (ml + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (mt + ph - ((v) - y0) / (y1 - y0) * ph)

    RfBuf b = {0};
    buf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                   "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", W, H, W, H);
    buf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    buf_printf(&b, "<text x=\"%g\" y=\"28\" font-size=\"17\" font-weight=\"bold\" text-anchor=\"middle\">",
               ml + pw / 2);
    put_text(&b, title);
    buf_printf(&b, "</text>\n");

    /* grid, ticks and tick labels */
    int yd = step_decimals(ys), xd = step_decimals(xs);
    buf_printf(&b, "<g font-size=\"12\" fill=\"#333\">\n");
    for (long k = lround(y0 / ys); k <= lround(y1 / ys) && k - lround(y0 / ys) < 100; k++) {
        double v = k * ys, py = PY(v);
        buf_printf(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e3e3e3\"/>\n", ml, py, ml + pw, py);
        buf_printf(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>\n", ml - 5, py, ml, py);
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n", ml - 8, py + 4, yd,
                   fabs(v) < ys * 1e-9 ? 0.0 : v);
    }
    for (long k = (long)ceil(x0 / xs - 1e-9); k * xs <= x1 + xs * 1e-6 && k * xs - x0 < 100 * xs; k++) {
        double v = k * xs, px = PX(v);
        buf_printf(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#efefef\"/>\n", px, mt, px, mt + ph);
        buf_printf(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>\n", px, mt + ph, px,
                   mt + ph + 5);
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%.*f</text>\n", px, mt + ph + 19, xd,
                   fabs(v) < xs * 1e-9 ? 0.0 : v);
    }
    buf_printf(&b, "</g>\n");
    buf_printf(&b, "<rect x=\"%g\" y=\"%g\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#333\"/>\n", ml, mt, pw, ph);

    /* axis labels */
    buf_printf(&b, "<text x=\"%g\" y=\"%g\" font-size=\"14\" text-anchor=\"middle\">", ml + pw / 2, H - 16);
    put_text(&b, xlabel);
    buf_printf(&b, "</text>\n<text x=\"%g\" y=\"%g\" font-size=\"14\" text-anchor=\"middle\" "
                   "transform=\"rotate(-90 %g %g)\">", 22.0, mt + ph / 2, 22.0, mt + ph / 2);
    put_text(&b, ylabel);
    buf_printf(&b, "</text>\n");

    /* the series: one path each, broken at NaN; isolated points as dots */
    buf_printf(&b, "<g fill=\"none\" stroke-width=\"2\" stroke-linejoin=\"round\">\n");
    for (int s = 0; s < n_series; s++) {
        const char *col = PALETTE[s % N_PALETTE], *dash = DASHES[(s / N_PALETTE) % 4];
        buf_printf(&b, "<path stroke=\"%s\"%s%s%s d=\"", col, *dash ? " stroke-dasharray=\"" : "", dash,
                   *dash ? "\"" : "");
        int pen = 0;
        for (int i = 0; i < n; i++) {
            if (!isfinite(x[i]) || !isfinite(y[s][i])) {
                pen = 0;
                continue;
            }
            buf_printf(&b, "%c%.2f %.2f ", pen ? 'L' : 'M', PX(x[i]), PY(y[s][i]));
            pen = 1;
        }
        buf_printf(&b, "\"/>\n");
        for (int i = 0; i < n; i++) {
            int ok = isfinite(x[i]) && isfinite(y[s][i]);
            int prev = i > 0 && isfinite(x[i - 1]) && isfinite(y[s][i - 1]);
            int next = i + 1 < n && isfinite(x[i + 1]) && isfinite(y[s][i + 1]);
            if (ok && !prev && !next)
                buf_printf(&b, "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"2.5\" fill=\"%s\" stroke=\"none\"/>\n", PX(x[i]),
                           PY(y[s][i]), col);
        }
    }
    buf_printf(&b, "</g>\n");

    /* legend, right of the plot */
    double lx = ml + pw + 18, ly = mt + 8;
    buf_printf(&b, "<g font-size=\"12\">\n");
    for (int s = 0; s < n_series; s++) {
        const char *col = PALETTE[s % N_PALETTE], *dash = DASHES[(s / N_PALETTE) % 4];
        double yy = ly + 20.0 * s;
        buf_printf(&b, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"3\"%s%s%s/>\n", lx,
                   yy, lx + 26, yy, col, *dash ? " stroke-dasharray=\"" : "", dash, *dash ? "\"" : "");
        buf_printf(&b, "<text x=\"%g\" y=\"%g\">", lx + 33, yy + 4);
        put_text(&b, names && names[s] ? names[s] : "");
        buf_printf(&b, "</text>\n");
    }
    buf_printf(&b, "</g>\n</svg>\n");
#undef PX
#undef PY
    return finish(&b, path);
}

/* ------------------------------------------------------------ heatmap */

/* Viridis, sampled at 9 evenly spaced stops and interpolated linearly. */
static const unsigned char VIRIDIS[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                            {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                            {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};

static void colormap(double u, int rgb[3]) {
    if (!(u > 0)) u = 0;
    if (u > 1) u = 1;
    double p = u * 8;
    int k = (int)p < 8 ? (int)p : 7;
    double f = p - k;
    for (int c = 0; c < 3; c++) rgb[c] = (int)lround(VIRIDIS[k][c] + f * (VIRIDIS[k + 1][c] - VIRIDIS[k][c]));
}

int svg_heatmap(const char *path, const char *title, int n_rows, int n_cols, const char *const *row_labels,
                const char *const *col_labels, const double *values, double vmin, double vmax) {
    if (n_rows <= 0 || n_cols <= 0) return rf_error("%s: a heatmap needs at least one row and one column", path);
    if (!(vmin < vmax) || !isfinite(vmin) || !isfinite(vmax))
        data_range(values, (size_t)n_rows * n_cols, &vmin, &vmax);
    int big = n_rows > n_cols ? n_rows : n_cols;
    double cell = 560.0 / big;
    if (cell > 48) cell = 48;
    if (cell < 12) cell = 12;
    size_t rl = 0, cl = 0;
    for (int r = 0; r < n_rows; r++) rl = row_labels && row_labels[r] && strlen(row_labels[r]) > rl ? strlen(row_labels[r]) : rl;
    for (int c = 0; c < n_cols; c++) cl = col_labels && col_labels[c] && strlen(col_labels[c]) > cl ? strlen(col_labels[c]) : cl;
    double ml = 20 + 7.0 * (double)rl, mt = 56, gw = cell * n_cols, gh = cell * n_rows;
    if (ml < 4.2 * (double)cl + 12 - cell / 2) ml = 4.2 * (double)cl + 12 - cell / 2; /* first slanted label */
    double mb = 24 + 5.2 * (double)cl, bar_x = ml + gw + 24, W = bar_x + 90, H = mt + gh + mb;
    if (W < 360) W = 360;

    RfBuf b = {0};
    buf_printf(&b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                   "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n", W, H, W, H);
    buf_printf(&b, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    buf_printf(&b, "<text x=\"%.1f\" y=\"30\" font-size=\"17\" font-weight=\"bold\" text-anchor=\"middle\">", W / 2);
    put_text(&b, title);
    buf_printf(&b, "</text>\n");

    int show = cell >= 30;
    buf_printf(&b, "<g font-size=\"%.0f\" text-anchor=\"middle\">\n", cell >= 40 ? 11.0 : 9.0);
    for (int r = 0; r < n_rows; r++)
        for (int c = 0; c < n_cols; c++) {
            double v = values[(size_t)r * n_cols + c], x = ml + c * cell, y = mt + r * cell;
            int rgb[3] = {200, 200, 200};
            if (isfinite(v)) colormap((v - vmin) / (vmax - vmin), rgb);
            buf_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"rgb(%d,%d,%d)\" "
                           "stroke=\"white\" stroke-width=\"0.5\"/>\n", x, y, cell, cell, rgb[0], rgb[1], rgb[2]);
            if (show && isfinite(v)) {
                double lum = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255;
                buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" fill=\"%s\">%.2f</text>\n", x + cell / 2, y + cell / 2 + 4,
                           lum < 0.5 ? "white" : "black", v);
            }
        }
    buf_printf(&b, "</g>\n<g font-size=\"12\" fill=\"#222\">\n");
    for (int r = 0; r < n_rows; r++) {
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">", ml - 6, mt + (r + 0.5) * cell + 4);
        put_text(&b, row_labels ? row_labels[r] : "");
        buf_printf(&b, "</text>\n");
    }
    for (int c = 0; c < n_cols; c++) {
        double x = ml + (c + 0.5) * cell, y = mt + gh + 12;
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\" transform=\"rotate(-45 %.2f %.2f)\">", x + 4,
                   y, x + 4, y);
        put_text(&b, col_labels ? col_labels[c] : "");
        buf_printf(&b, "</text>\n");
    }
    buf_printf(&b, "</g>\n");

    /* colour scale: a vertical gradient from vmin (bottom) to vmax (top) */
    buf_printf(&b, "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n");
    for (int k = 0; k <= 10; k++) {
        int rgb[3];
        colormap(k / 10.0, rgb);
        buf_printf(&b, "<stop offset=\"%d%%\" stop-color=\"rgb(%d,%d,%d)\"/>\n", 10 * k, rgb[0], rgb[1], rgb[2]);
    }
    buf_printf(&b, "</linearGradient></defs>\n");
    buf_printf(&b, "<rect x=\"%.2f\" y=\"%.2f\" width=\"16\" height=\"%.2f\" fill=\"url(#scale)\" stroke=\"#333\"/>\n",
               bar_x, mt, gh);
    double st = nice_step(vmin, vmax, 5);
    int d = step_decimals(st);
    buf_printf(&b, "<g font-size=\"11\" fill=\"#222\">\n");
    for (long k = (long)ceil(vmin / st - 1e-9); k * st <= vmax + st * 1e-6 && k * st - vmin < 100 * st; k++) {
        double v = k * st, y = mt + gh - (v - vmin) / (vmax - vmin) * gh;
        buf_printf(&b, "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#333\"/>\n", bar_x + 16, y,
                   bar_x + 20, y);
        buf_printf(&b, "<text x=\"%.2f\" y=\"%.2f\">%.*f</text>\n", bar_x + 23, y + 4, d, fabs(v) < st * 1e-9 ? 0.0 : v);
    }
    buf_printf(&b, "</g>\n</svg>\n");
    return finish(&b, path);
}
