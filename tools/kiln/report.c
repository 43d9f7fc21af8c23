/* kiln command line: metrics, the classification report, progress and JSON. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool metrics_compute(const float *proba, const int64_t *y, int64_t n, int k, const float *cw, metrics *m) {
    *m = (metrics){0};
    m->k = k;
    m->cm = cli_alloc((size_t)k * (size_t)k * sizeof *m->cm);
    m->precision = cli_alloc((size_t)k * sizeof(double));
    m->recall = cli_alloc((size_t)k * sizeof(double));
    m->f1 = cli_alloc((size_t)k * sizeof(double));
    m->support = cli_alloc((size_t)k * sizeof *m->support);
    if (!m->cm || !m->precision || !m->recall || !m->f1 || !m->support) {
        metrics_free(m);
        return false;
    }
    double loss = 0, wsum = 0;
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0 || y[i] >= k) continue; /* no usable target */
        const float *p = proba + i * k;
        int best = 0;
        for (int c = 1; c < k; c++)
            if (p[c] > p[best]) best = c;
        m->cm[y[i] * k + best]++;
        m->correct += best == y[i];
        m->n++;
        double w = cw ? cw[y[i]] : 1.0;
        loss -= w * log(p[y[i]] > 1e-12f ? p[y[i]] : 1e-12);
        wsum += w;
    }
    m->loss = wsum > 0 ? loss / wsum : NAN;
    for (int i = 0; i < k; i++) {
        int64_t tp = m->cm[i * k + i], pred_n = 0, true_n = 0;
        for (int j = 0; j < k; j++) {
            pred_n += m->cm[j * k + i];
            true_n += m->cm[i * k + j];
        }
        double pr = pred_n ? (double)tp / (double)pred_n : 0, rc = true_n ? (double)tp / (double)true_n : 0;
        m->precision[i] = pr;
        m->recall[i] = rc;
        m->f1[i] = pr + rc > 0 ? 2 * pr * rc / (pr + rc) : 0;
        m->support[i] = true_n;
        double v[3] = {pr, rc, m->f1[i]};
        for (int q = 0; q < 3; q++) {
            m->macro[q] += v[q] / k;
            if (m->n) m->weighted[q] += v[q] * (double)true_n / (double)m->n;
        }
    }
    return true;
}

void metrics_free(metrics *m) {
    free(m->cm);
    free(m->precision);
    free(m->recall);
    free(m->f1);
    free(m->support);
    *m = (metrics){0};
}

static int digits(int64_t v) {
    int d = 1;
    while (v >= 10) v /= 10, d++;
    return d;
}

void report_print(const metrics *m, char *const *classes, FILE *f) {
    int k = m->k, w = 5, nw = 12;
    for (int i = 0; i < k; i++) {
        int l = (int)strlen(classes[i]);
        if (l > w) w = l;
        if (l > nw) nw = l;
    }
    if (digits(m->n) + 1 > w) w = digits(m->n) + 1;
    if (w > 24) w = 24;
    if (nw > 32) nw = 32;
    double acc = m->n ? (double)m->correct / (double)m->n : 0;
    fprintf(f, "\ntest accuracy: %.4f (%lld of %lld), loss %.4f\n\n", acc, (long long)m->correct, (long long)m->n,
            m->loss);
    fprintf(f, "confusion matrix (rows: true class, columns: predicted)\n%*s", nw, "");
    for (int j = 0; j < k; j++) fprintf(f, " %*.*s", w, w, classes[j]);
    fprintf(f, "\n");
    for (int i = 0; i < k; i++) {
        fprintf(f, "%*.*s", nw, nw, classes[i]);
        for (int j = 0; j < k; j++) fprintf(f, " %*lld", w, (long long)m->cm[i * k + j]);
        fprintf(f, "\n");
    }
    fprintf(f, "\n%*s %9s %9s %9s %9s\n", nw, "", "precision", "recall", "f1-score", "support");
    for (int i = 0; i < k; i++)
        fprintf(f, "%*.*s %9.4f %9.4f %9.4f %9lld\n", nw, nw, classes[i], m->precision[i], m->recall[i], m->f1[i],
                (long long)m->support[i]);
    fprintf(f, "\n%*s %9s %9s %9.4f %9lld\n", nw, "accuracy", "", "", acc, (long long)m->n);
    fprintf(f, "%*s %9.4f %9.4f %9.4f %9lld\n", nw, "macro avg", m->macro[0], m->macro[1], m->macro[2], (long long)m->n);
    fprintf(f, "%*s %9.4f %9.4f %9.4f %9lld\n", nw, "weighted avg", m->weighted[0], m->weighted[1], m->weighted[2],
            (long long)m->n);
}

void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fprintf(f, "null");
}

void report_json_metrics(const metrics *m, char *const *classes, FILE *f) {
    fprintf(f, "\"accuracy\":");
    json_num(f, m->n ? (double)m->correct / (double)m->n : 0);
    fprintf(f, ",\"loss\":");
    json_num(f, m->loss);
    fprintf(f, ",\"rows\":%lld,\"correct\":%lld,\"classes\":[", (long long)m->n, (long long)m->correct);
    for (int i = 0; i < m->k; i++) {
        fprintf(f, "%s{\"name\":", i ? "," : "");
        json_str(f, classes[i]);
        fprintf(f, ",\"precision\":");
        json_num(f, m->precision[i]);
        fprintf(f, ",\"recall\":");
        json_num(f, m->recall[i]);
        fprintf(f, ",\"f1\":");
        json_num(f, m->f1[i]);
        fprintf(f, ",\"support\":%lld}", (long long)m->support[i]);
    }
    fprintf(f, "],\"macro_avg\":{\"precision\":");
    json_num(f, m->macro[0]);
    fprintf(f, ",\"recall\":");
    json_num(f, m->macro[1]);
    fprintf(f, ",\"f1\":");
    json_num(f, m->macro[2]);
    fprintf(f, "},\"weighted_avg\":{\"precision\":");
    json_num(f, m->weighted[0]);
    fprintf(f, ",\"recall\":");
    json_num(f, m->weighted[1]);
    fprintf(f, ",\"f1\":");
    json_num(f, m->weighted[2]);
    fprintf(f, "},\"confusion_matrix\":[");
    for (int i = 0; i < m->k; i++) {
        fprintf(f, "%s[", i ? "," : "");
        for (int j = 0; j < m->k; j++) fprintf(f, "%s%lld", j ? "," : "", (long long)m->cm[i * m->k + j]);
        fprintf(f, "]");
    }
    fprintf(f, "]");
}

/* ---- progress: a redrawn bar on a terminal, log lines otherwise --------------------- */
void progress_begin(progress *p, int total, bool quiet) {
    p->tty = isatty(STDOUT_FILENO);
    p->quiet = quiet;
    p->total_epochs = total;
    p->start = cli_now();
    p->last_draw = 0;
    p->last_logged = 0;
}

static void fmt_time(double s, char *buf, size_t cap) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

void progress_update(progress *p, int epoch, double loss, double tacc, double vloss, double vacc, double rps,
                     bool improved) {
    if (p->quiet) return;
    double now = cli_now(), el = now - p->start;
    /* A terminal is redrawn at most 10 times a second (and on improvements). */
    if (p->tty && epoch < p->total_epochs && !improved && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    char eta[32], val[64], spd[32];
    fmt_time(el / epoch * (p->total_epochs - epoch), eta, sizeof eta);
    if (isnan(vacc)) snprintf(val, sizeof val, "val -");
    else snprintf(val, sizeof val, "val loss %.4f acc %.4f%s", vloss, vacc, improved ? "*" : " ");
    if (rps >= 1e6) snprintf(spd, sizeof spd, "%.1fM rows/s", rps / 1e6);
    else if (rps >= 1e3) snprintf(spd, sizeof spd, "%.1fk rows/s", rps / 1e3);
    else snprintf(spd, sizeof spd, "%.0f rows/s", rps);
    if (p->tty) {
        int width = 20, done = (int)((double)width * epoch / p->total_epochs);
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < done ? '#' : '.';
        bar[width] = 0;
        printf("\r\033[Kepoch %*d/%d [%s] loss %.4f acc %.4f | %s | %s | ETA %s", digits(p->total_epochs), epoch,
               p->total_epochs, bar, loss, tacc, val, spd, eta);
        fflush(stdout);
        return;
    }
    /* About 20 lines per run, plus the first and the last epoch. */
    int every = p->total_epochs >= 20 ? p->total_epochs / 20 : 1;
    if (epoch == 1 || epoch == p->total_epochs || epoch - p->last_logged >= every) {
        printf("epoch %*d/%d loss %.4f acc %.4f | %s | %s | ETA %s\n", digits(p->total_epochs), epoch,
               p->total_epochs, loss, tacc, val, spd, eta);
        fflush(stdout);
        p->last_logged = epoch;
    }
}

void progress_end(progress *p) {
    if (!p->quiet && p->tty) {
        printf("\n");
        fflush(stdout);
    }
}
