/* kiln command line: metrics, the classification report, progress and JSON. */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* ---- regression ------------------------------------------------------------------------- */
static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bool reg_metrics_compute(const float *pred, const double *y, int64_t n, double mean, double std, reg_metrics *m) {
    *m = (reg_metrics){0};
    double *res = cli_alloc(((size_t)n + 1) * sizeof *res);
    if (!res) return false;
    double sy = 0;
    for (int64_t i = 0; i < n; i++)
        if (!isnan(y[i])) sy += y[i], m->n++;
    double ym = m->n ? sy / (double)m->n : 0, sse = 0, sst = 0, sae = 0, sz = 0;
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(y[i])) continue;
        double p = (double)pred[i] * std + mean, r = y[i] - p, z = r / std;
        res[k++] = r;
        sse += r * r;
        sae += fabs(r);
        sst += (y[i] - ym) * (y[i] - ym);
        sz += z * z;
    }
    if (m->n) {
        m->rmse = sqrt(sse / (double)m->n);
        m->mae = sae / (double)m->n;
        m->r2 = sst > 0 ? 1 - sse / sst : NAN; /* undefined for a constant target */
        m->mse_std = sz / (double)m->n;
        qsort(res, (size_t)k, sizeof *res, cmp_dbl);
        for (int q = 0; q < 5; q++) m->resid_q[q] = res[(int64_t)((double)(k - 1) * q / 4.0 + 0.5)];
    } else {
        m->rmse = m->mae = m->r2 = m->mse_std = NAN;
    }
    free(res);
    return true;
}

void reg_report_print(const reg_metrics *m, const char *what, const char *target, FILE *f) {
    fprintf(f, "\n%s (%lld rows, target '%s'): RMSE %.6g, MAE %.6g, R^2 %.4f\n", what, (long long)m->n, target, m->rmse,
            m->mae, m->r2);
    fprintf(f, "residuals (actual - predicted): min %.4g, 25%% %.4g, median %.4g, 75%% %.4g, max %.4g\n",
            m->resid_q[0], m->resid_q[1], m->resid_q[2], m->resid_q[3], m->resid_q[4]);
}

typedef struct {
    float score;
    bool pos;
} scored;

static int cmp_scored(const void *a, const void *b) {
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

/* Mann-Whitney: the positives' rank sum, ties at their average rank. */
double roc_auc(const float *score, int stride, const int64_t *y, int64_t n, int64_t pos_code) {
    scored *v = cli_alloc(((size_t)n + 1) * sizeof *v);
    if (!v) return NAN;
    int64_t m = 0, np = 0;
    for (int64_t i = 0; i < n; i++) {
        if (y[i] < 0) continue;
        v[m++] = (scored){score[i * stride], y[i] == pos_code};
        np += y[i] == pos_code;
    }
    qsort(v, (size_t)m, sizeof *v, cmp_scored);
    double rank_sum = 0;
    for (int64_t i = 0; i < m;) {
        int64_t j = i;
        while (j < m && v[j].score == v[i].score) j++;
        double avg = (double)(i + 1 + j) / 2; /* ranks i+1 .. j */
        for (int64_t k = i; k < j; k++)
            if (v[k].pos) rank_sum += avg;
        i = j;
    }
    free(v);
    int64_t nn = m - np;
    if (!np || !nn) return NAN;
    return (rank_sum - (double)np * (double)(np + 1) / 2) / ((double)np * (double)nn);
}

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
    m->auc = k == 2 ? roc_auc(proba + 1, 2, y, n, 1) : NAN;
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

#define MAX_PRINTED_CLASSES 20

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
    fprintf(f, "\ntest accuracy: %.4f (%lld of %lld), loss %.4f\n", acc, (long long)m->correct, (long long)m->n,
            m->loss);
    if (k == 2)
        fprintf(f, "positive class: '%s'; ROC AUC %.4f (of its probability)\n",
                classes[positive_of((const char *const *)classes)], m->auc);
    fprintf(f, "\n");
    if (k > MAX_PRINTED_CLASSES) { /* a matrix that wide wraps into noise */
        fprintf(f, "confusion matrix: %d classes, not printed (more than %d; --json has the per-class figures)\n", k,
                MAX_PRINTED_CLASSES);
    } else {
        fprintf(f, "confusion matrix (rows: true class, columns: predicted)\n%*s", nw, "");
        for (int j = 0; j < k; j++) fprintf(f, " %*.*s", w, w, classes[j]);
        fprintf(f, "\n");
        for (int i = 0; i < k; i++) {
            fprintf(f, "%*.*s", nw, nw, classes[i]);
            for (int j = 0; j < k; j++) fprintf(f, " %*lld", w, (long long)m->cm[i * k + j]);
            fprintf(f, "\n");
        }
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

void reg_report_json(const reg_metrics *m, FILE *f) {
    fprintf(f, "\"rows\":%lld,\"rmse\":", (long long)m->n);
    json_num(f, m->rmse);
    fprintf(f, ",\"mae\":");
    json_num(f, m->mae);
    fprintf(f, ",\"r2\":");
    json_num(f, m->r2);
    fprintf(f, ",\"residuals\":{\"min\":");
    json_num(f, m->resid_q[0]);
    fprintf(f, ",\"q25\":");
    json_num(f, m->resid_q[1]);
    fprintf(f, ",\"median\":");
    json_num(f, m->resid_q[2]);
    fprintf(f, ",\"q75\":");
    json_num(f, m->resid_q[3]);
    fprintf(f, ",\"max\":");
    json_num(f, m->resid_q[4]);
    fprintf(f, "}");
}

void report_json_metrics(const metrics *m, char *const *classes, FILE *f) {
    fprintf(f, "\"accuracy\":");
    json_num(f, m->n ? (double)m->correct / (double)m->n : 0);
    fprintf(f, ",\"loss\":");
    json_num(f, m->loss);
    fprintf(f, ",\"rows\":%lld,\"correct\":%lld,", (long long)m->n, (long long)m->correct);
    if (m->k == 2) {
        fprintf(f, "\"positive_class\":");
        json_str(f, classes[positive_of((const char *const *)classes)]);
        fprintf(f, ",\"roc_auc\":");
        json_num(f, m->auc);
        fprintf(f, ",");
    }
    fprintf(f, "\"classes\":[");
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

/* ---- the per-epoch history ------------------------------------------------------------ */
bool history_add(train_history *h, const double row[HIST_COLS]) {
    if (h->n == h->cap) {
        int cap = h->cap ? (h->cap < (1 << 28) ? h->cap * 2 : 0) : 64;
        void *p = cap ? realloc(h->row, (size_t)cap * sizeof *h->row) : NULL;
        if (!p) return cli_error("out of memory keeping the training history"), false;
        h->row = p;
        h->cap = cap;
    }
    memcpy(h->row[h->n++], row, sizeof *h->row);
    return true;
}

void history_free(train_history *h) {
    free(h->row);
    *h = (train_history){0};
}

void history_json(const train_history *h, bool regression, FILE *f) {
    static const char *const cls[HIST_COLS] = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                               NULL, "lr", "seconds"};
    static const char *const reg[HIST_COLS] = {"epoch", "train_loss", NULL, "val_loss", "val_r2", "val_rmse", "lr",
                                               "seconds"};
    const char *const *key = regression ? reg : cls;
    fprintf(f, "\"history_from\":%d,\"history\":[", h->n ? (int)h->row[0][H_EPOCH] : h->from);
    for (int i = 0; i < h->n; i++) {
        fprintf(f, "%s{\"epoch\":%d", i ? "," : "", (int)h->row[i][H_EPOCH]);
        for (int c = 1; c < HIST_COLS; c++) {
            if (!key[c]) continue;
            fprintf(f, ",\"%s\":", key[c]);
            if (isfinite(h->row[i][c])) fprintf(f, "%.9g", h->row[i][c]); /* enough digits for a curve's small steps */
            else fprintf(f, "null");
        }
        fprintf(f, "}");
    }
    fprintf(f, "]");
}

/* ---- progress: a redrawn bar on a terminal, log lines otherwise --------------------- */
void progress_begin(progress *p, int total, bool quiet) {
    p->tty = isatty(STDOUT_FILENO);
    p->quiet = quiet;
    if (!p->metric) p->metric = "acc";
    p->total_epochs = total;
    p->stop_in = -1;
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

/* The terminal's width: the tty's, else $COLUMNS, else 80. */
static int term_width(void) {
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *c = getenv("COLUMNS");
    int w = c ? atoi(c) : 0;
    return w > 0 ? w : 80;
}

void progress_update(progress *p, int epoch, double loss, double tacc, double vloss, double vacc, double rps,
                     bool improved) {
    if (p->quiet) return;
    double now = cli_now(), el = now - p->start;
    /* A terminal is redrawn at most 10 times a second (and on improvements). */
    if (p->tty && epoch < p->total_epochs && !improved && now - p->last_draw < 0.1) return;
    p->last_draw = now;
    /* Pieces of the line, all numbers (bounded). The ETA knows early
     * stopping: with stop_in epochs to go before patience runs out, the run
     * ends between those and the last epoch. */
    char eta[112], val[64], spd[32], head[32], tr[48], bar[32];
    double per = el / epoch;
    int left = p->total_epochs - epoch;
    char a[48], b[48];
    fmt_time(per * left, b, sizeof b);
    if (p->stop_in >= 0 && p->stop_in < left) {
        fmt_time(per * p->stop_in, a, sizeof a);
        snprintf(eta, sizeof eta, "ETA %s-%s", a, b);
    } else {
        snprintf(eta, sizeof eta, "ETA %s", b);
    }
    if (isnan(vloss)) snprintf(val, sizeof val, "val -");
    else snprintf(val, sizeof val, "val loss %.4f %s %.4f%s", vloss, p->metric, vacc, improved ? "*" : " ");
    if (rps >= 1e6) snprintf(spd, sizeof spd, "%.1fM rows/s", rps / 1e6);
    else if (rps >= 1e3) snprintf(spd, sizeof spd, "%.1fk rows/s", rps / 1e3);
    else snprintf(spd, sizeof spd, "%.0f rows/s", rps);
    snprintf(head, sizeof head, "epoch %*d/%d", digits(p->total_epochs), epoch, p->total_epochs);
    if (isnan(tacc)) snprintf(tr, sizeof tr, "loss %.4f", loss);
    else snprintf(tr, sizeof tr, "loss %.4f %s %.4f", loss, p->metric, tacc);
    int width = 20, done = (int)((double)width * epoch / p->total_epochs);
    bar[0] = '[';
    for (int i = 0; i < width; i++) bar[i + 1] = i < done ? '#' : '.';
    bar[width + 1] = ']';
    bar[width + 2] = 0;
    char line[sizeof head + sizeof bar + sizeof tr + sizeof val + sizeof spd + sizeof eta + 16]; /* every piece fits */
    if (p->tty) {
        /* Fit the terminal: drop the bar, then the speed, then cut; a line
         * that wraps would scroll one line per redraw. */
        int cols = term_width() - 1;
        snprintf(line, sizeof line, "%s %s %s | %s | %s | %s", head, bar, tr, val, spd, eta);
        if ((int)strlen(line) > cols) snprintf(line, sizeof line, "%s %s | %s | %s | %s", head, tr, val, spd, eta);
        if ((int)strlen(line) > cols) snprintf(line, sizeof line, "%s %s | %s | %s", head, tr, val, eta);
        if ((int)strlen(line) > cols) snprintf(line, sizeof line, "%s %s | %s", head, tr, eta);
        if (cols > 0 && (int)strlen(line) > cols) line[cols] = 0;
        printf("\r\033[K%s", line);
        fflush(stdout);
        return;
    }
    /* About 20 lines per run, plus the first and the last epoch. */
    int every = p->total_epochs >= 20 ? p->total_epochs / 20 : 1;
    if (epoch == 1 || epoch == p->total_epochs || epoch - p->last_logged >= every) {
        printf("%s %s | %s | %s | %s\n", head, tr, val, spd, eta);
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
