/* Checkpoints: the library's kn_checkpoint_save/load (a resumed run repeats
 * the uninterrupted one bit for bit; a mismatched file changes nothing), and
 * `kiln train --checkpoint/--resume` run as a user would, killed with SIGKILL
 * at many moments and resumed each time, and stopped with Ctrl-C: the newest
 * checkpoint always loads, and the final model equals, byte for byte, the
 * model of a run that never stopped. */
#include "kt_cli.h"

#include <dirent.h>
#include <time.h>

/* ---- the library -------------------------------------------------------------------- */

/* Linear-ReLU-Dropout-Linear: dropout draws from the global generator, so
 * the generator's state is part of what must come back. */
static kn_module *tiny_model(void) {
    kn_module *l[] = {kn_nn_linear(6, 16, true), kn_nn_relu(), kn_nn_dropout(0.3), kn_nn_linear(16, 3, true)};
    return kn_nn_sequential(4, l);
}

static kn_tensor *x_data, *y_data;

static void train_steps(kn_module *m, kn_optim *o, int steps) {
    for (int s = 0; s < steps; s++) {
        kn_scope sc = kn_scope_begin();
        kn_optim_zero_grad(o);
        kn_tensor *loss = kn_cross_entropy(kn_module_forward(m, x_data), y_data);
        CHECK(loss && kn_backward(loss) == KN_OK && kn_optim_step(o) == KN_OK, "step: %s", kn_error());
        kn_scope_end(sc);
    }
}

/* Bitwise equality of two modules' state dicts. */
static bool same_weights(kn_module *a, kn_module *b) {
    int na = 0, nb = 0;
    const kn_named_tensor *sa = kn_module_state_dict(a, &na), *sb = kn_module_state_dict(b, &nb);
    if (na != nb) return false;
    for (int i = 0; i < na; i++) {
        int64_t n = kn_numel(sa[i].tensor);
        if (n != kn_numel(sb[i].tensor)) return false;
        float *pa = malloc((size_t)n * 4 + 4), *pb = malloc((size_t)n * 4 + 4);
        bool eq = pa && pb && kn_to_host(sa[i].tensor, pa, KN_F32) == KN_OK &&
                  kn_to_host(sb[i].tensor, pb, KN_F32) == KN_OK && !memcmp(pa, pb, (size_t)n * 4);
        free(pa);
        free(pb);
        if (!eq) return false;
    }
    return true;
}

static void test_library(bool adam) {
    const char *path = path_in(adam ? "lib_adam.ckpt" : "lib_sgd.ckpt");
    kn_scope top = kn_scope_begin(); /* the tensors made here */
    kn_manual_seed(7);
    x_data = kn_randn(KN_SHAPE(32, 6), KN_F32, KN_CPU, NULL);
    y_data = kn_randint(0, 3, KN_SHAPE(32), KN_I64, KN_CPU, NULL);
    kn_sgd_opts so = kn_sgd_defaults(0.05);
    so.momentum = 0.9;
    kn_adam_opts ao = kn_adam_defaults(0.01);
    ao.weight_decay = 0.01;

    /* The run that never stops: 6 steps, a checkpoint after 3. */
    kn_manual_seed(11);
    kn_module *a = tiny_model();
    kn_optim *oa = adam ? kn_adamw(a, ao) : kn_sgd(a, so);
    kn_module_train(a, true);
    train_steps(a, oa, 3);
    kn_tensor *extra = kn_arange(0, 5, 1, KN_I64, KN_CPU);
    kn_named_tensor ex[] = {{"counter", extra}};
    kn_meta meta[] = {{"epoch", "3"}};
    kn_checkpoint ca = {a, oa, kn_default_generator(), 1, ex, 1, meta};
    CHECK(kn_checkpoint_save(path, &ca) == KN_OK, "checkpoint save: %s", kn_error());
    train_steps(a, oa, 3);

    /* Another process's start: a model built from another seed, the
     * generator elsewhere; the checkpoint brings it all back. */
    kn_manual_seed(99);
    kn_module *b = tiny_model();
    kn_optim *ob = adam ? kn_adamw(b, ao) : kn_sgd(b, so);
    kn_module_train(b, true);
    kn_uniform_(kn_randn(KN_SHAPE(100), KN_F32, KN_CPU, NULL), 0, 1, NULL); /* moves the generator on */
    kn_tensor *extra_b = kn_zeros(KN_SHAPE(5), KN_I64, KN_CPU);
    kn_named_tensor exb[] = {{"counter", extra_b}};
    kn_checkpoint cb = {b, ob, kn_default_generator(), 1, exb, 0, NULL};
    kn_safetensors *f = kn_checkpoint_load(path, &cb);
    CHECK(f != NULL, "checkpoint load: %s", kn_error());
    if (f) {
        const char *ep = kn_safetensors_meta(f, "epoch");
        CHECK(ep && !strcmp(ep, "3"), "caller's metadata comes back: %s", ep ? ep : "(none)");
        kn_safetensors_close(f);
    }
    CHECK(kn_optim_steps(ob) == 3, "step count restored: %lld", (long long)kn_optim_steps(ob));
    int64_t cnt[5] = {0};
    kn_to_host(extra_b, cnt, KN_I64);
    CHECK(cnt[4] == 4, "extra tensor restored: %lld", (long long)cnt[4]);
    train_steps(b, ob, 3);
    CHECK(same_weights(a, b), "%s: the resumed run's weights equal the uninterrupted run's, bit for bit",
          adam ? "AdamW" : "SGD momentum");

    /* A checkpoint of another structure or optimizer changes nothing. */
    kn_manual_seed(5);
    kn_module *l[] = {kn_nn_linear(6, 8, true), kn_nn_relu(), kn_nn_linear(8, 3, true)};
    kn_module *c = kn_nn_sequential(3, l);
    kn_module *c_copy_src = NULL;
    kn_optim *oc = kn_adamw(c, ao);
    kn_checkpoint cc = {c, oc, NULL, 0, NULL, 0, NULL};
    kn_manual_seed(5);
    kn_module *l2[] = {kn_nn_linear(6, 8, true), kn_nn_relu(), kn_nn_linear(8, 3, true)};
    c_copy_src = kn_nn_sequential(3, l2); /* the same initial weights, for comparison */
    CHECK(kn_checkpoint_load(path, &cc) == NULL, "a checkpoint of another model is refused");
    CHECK(strstr(kn_error(), path) != NULL, "the error names the file: %s", kn_error());
    CHECK(same_weights(c, c_copy_src), "a refused checkpoint leaves the model unchanged");
    kn_optim *wrong = adam ? kn_sgd(b, so) : kn_adam(b, ao);
    kn_checkpoint cw = {NULL, wrong, NULL, 0, NULL, 0, NULL};
    CHECK(kn_checkpoint_load(path, &cw) == NULL && strstr(kn_error(), "optimizer is"),
          "another kind of optimizer is refused: %s", kn_error());
    kn_meta reserved[] = {{"kiln_checkpoint", "x"}};
    kn_checkpoint cr = {a, NULL, NULL, 0, NULL, 1, reserved};
    CHECK(kn_checkpoint_save(path_in("never.ckpt"), &cr) != KN_OK && !exists(path_in("never.ckpt")),
          "kiln's own metadata key is refused, nothing written");
    CHECK(kn_checkpoint_load(path_in("missing.ckpt"), &cb) == NULL && strstr(kn_error(), "missing.ckpt"),
          "a missing file: %s", kn_error());

    kn_optim_free(wrong);
    kn_optim_free(oc);
    kn_module_free(c);
    kn_module_free(c_copy_src);
    kn_optim_free(oa);
    kn_optim_free(ob);
    kn_module_free(a);
    kn_module_free(b);
    kn_scope_end(top);
}

/* ---- the command line ---------------------------------------------------------------- */

#define CAR KILN_SOURCE_DIR "/data/car/car.csv"
#define EPOCHS "60"

/* Whether two files hold the same bytes. */
/* Starts kiln with args, output to files; returns the pid. */
static pid_t spawn(const char *const *args) {
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)KILN_CLI_PATH;
    for (; args[n - 1] && n < 63; n++) argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(path_in(".spawn_out"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(path_in(".spawn_err"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        setenv("KILN_DEVICE", "cpu", 1);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int temp_files(const char *d) {
    DIR *dd = opendir(d);
    int n = 0;
    for (struct dirent *e; dd && (e = readdir(dd));) n += strstr(e->d_name, ".tmp") != NULL;
    if (dd) closedir(dd);
    return n;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Returns the reference run's wall time in ms. */
static long test_cli_resume(void) {
    const char *ref = path_in("ref.safetensors");
    double t0 = now_ms();
    int rc = RUN("train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS, "--out", ref, "--quiet");
    CHECK(rc == 0, "reference run: %s", err_buf);
    long ref_ms = (long)(now_ms() - t0);

    /* Stop at epoch 25 (a checkpoint every 5), resume to the end. */
    const char *c1 = path_in("c1"), *b = path_in("b.safetensors");
    rc = RUN("train", CAR, "--target", "class", "--seed", "3", "--epochs", "25", "--checkpoint", c1, "--every", "5",
             "--quiet");
    CHECK(rc == 0 && exists(path_in("c1/checkpoint.safetensors")), "first part writes a checkpoint: %s", err_buf);
    rc = RUN("train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS, "--resume", c1, "--out", b,
             "--json");
    CHECK(rc == 0 && json_number(out_buf, "training", "resumed_from_epoch") == 25, "resumed from epoch 25: %s %s",
          out_buf, err_buf);
    CHECK(same_bytes(ref, b), "stopped at 25 and resumed: the same model file, byte for byte");

    /* What a resume refuses, each in one line naming the problem. */
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--seed", "3", "--resume", c1, "--lr", "0.01"), "--lr 0.003");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--seed", "4", "--resume", c1), "--seed 3");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--seed", "3", "--resume", c1, "--ignore", "doors"),
                "other data or columns");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--resume", path_in("nowhere")), "nowhere");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--every", "2"), "--every needs --checkpoint");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--checkpoint", CAR), "not a directory");
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--every", "0", "--checkpoint", c1), "--every");
    /* A model file is not a checkpoint; a truncated checkpoint is refused. */
    mkdir(path_in("c_model"), 0755);
    static char buf[1 << 20];
    size_t n = read_file(ref, buf, sizeof buf);
    write_file("c_model/checkpoint.safetensors", buf, n);
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--seed", "3", "--resume", path_in("c_model")),
                "checkpoint");
    n = read_file(path_in("c1/checkpoint.safetensors"), buf, sizeof buf);
    mkdir(path_in("c_cut"), 0755);
    write_file("c_cut/checkpoint.safetensors", buf, n / 2);
    CHECK_FAILS(RUN("train", CAR, "--target", "class", "--seed", "3", "--resume", path_in("c_cut")),
                "c_cut/checkpoint.safetensors");
    return ref_ms;
}

/* One run to the end through kills: returns the kills and resumes. */
static void kill_round(const char *name, long span, uint64_t *s, int *kills, int *resumes) {
    char c2[512], fin[512], ckpt[512], ref[512], sub[128]; /* path_in's buffers are a ring: keep copies */
    snprintf(c2, sizeof c2, "%s", path_in(name));
    snprintf(sub, sizeof sub, "%s.safetensors", name);
    snprintf(fin, sizeof fin, "%s", path_in(sub));
    snprintf(sub, sizeof sub, "%s/checkpoint.safetensors", name);
    snprintf(ckpt, sizeof ckpt, "%s", path_in(sub));
    snprintf(ref, sizeof ref, "%s", path_in("ref.safetensors"));
    int done = 0;
    *kills = *resumes = 0;
    for (int attempt = 0; attempt < 80 && !done; attempt++) {
        bool resume = exists(ckpt);
        *resumes += resume;
        const char *args[] = {"train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS,
                              resume ? "--resume" : "--checkpoint", c2, "--every", "1", "--out", fin, "--quiet", NULL};
        pid_t pid = spawn(args);
        *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
        long delay = 5 + (long)((*s >> 33) % (uint64_t)span); /* ms: start-up, mid-epoch, mid-save */
        int status = 0;
        long waited = 0;
        while (waited < delay && waitpid(pid, &status, WNOHANG) == 0) {
            sleep_ms(2);
            waited += 2;
        }
        if (waited >= delay) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
        }
        if (WIFSIGNALED(status)) {
            (*kills)++;
            continue;
        }
        char err[4096];
        read_file(path_in(".spawn_err"), err, sizeof err);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "run %d (%s) exit %d: %s", attempt,
              resume ? "resumed" : "fresh", WEXITSTATUS(status), err);
        done = 1;
    }
    if (!done) { /* not finished within the kills: let it run to the end */
        int rc = RUN("train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS, "--resume", c2, "--every",
                     "1", "--out", fin, "--quiet");
        CHECK(rc == 0, "final resume: %s", err_buf);
    }
    printf("  kill test %s: %d kills, %d resumes (delays up to %ld ms)\n", name, *kills, *resumes, span);
    CHECK(same_bytes(ref, fin), "killed %d times and resumed: the reference model, byte for byte", *kills);
    CHECK(temp_files(c2) <= 1, "stale temporary files are cleaned up (%d left)", temp_files(c2));
}

/* Kill training with SIGKILL at many moments (during epochs, during saves),
 * resuming each time from whatever checkpoint is newest: every resume must
 * load, and the last run's model must equal the reference. A round that
 * ends too soon (a busy machine's timing) is repeated with shorter delays. */
static void test_cli_kill(long ref_ms) {
    uint64_t s = 0x5eed;
    int kills = 0, resumes = 0;
    /* Delays up to a sixth of a whole run: most kills land mid-run, and each
     * run gets a little further, on a fast machine as under a sanitizer. */
    long span = ref_ms / 6 > 30 ? ref_ms / 6 : 30;
    for (int round = 0; round < 4 && (kills < 5 || resumes < 5); round++, span = span / 2 > 10 ? span / 2 : 10) {
        char name[32];
        snprintf(name, sizeof name, "kill%d", round);
        kill_round(name, span, &s, &kills, &resumes);
    }
    CHECK(kills >= 5 && resumes >= 5, "the kill test killed (%d) and resumed (%d) enough to prove something", kills,
          resumes);
}

/* Ctrl-C: training stops after the epoch, the report is printed, the best
 * model so far is saved, the exit status is 130; the checkpoint resumes. */
static void test_cli_interrupt(void) {
    char c3[512], out[512], fin[512], ckpt[512], ref[512]; /* path_in's buffers are a ring: keep copies */
    snprintf(c3, sizeof c3, "%s", path_in("c3"));
    snprintf(out, sizeof out, "%s", path_in("int.safetensors"));
    snprintf(fin, sizeof fin, "%s", path_in("int_final.safetensors"));
    snprintf(ckpt, sizeof ckpt, "%s", path_in("c3/checkpoint.safetensors"));
    snprintf(ref, sizeof ref, "%s", path_in("ref.safetensors"));
    const char *args[] = {"train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS,
                          "--checkpoint", c3, "--out", out, NULL};
    pid_t pid = spawn(args);
    /* Ctrl-C during training: the first checkpoint shows the loop has begun
     * (before it, during data loading, Ctrl-C simply ends the process). */
    for (int i = 0; i < 5000 && !exists(ckpt); i++) sleep_ms(2);
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    char o[1 << 16];
    read_file(path_in(".spawn_out"), o, sizeof o);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 130, "Ctrl-C: exit status 130 (status %d)", status);
    CHECK(strstr(o, "interrupted: training stopped after epoch") && strstr(o, "test accuracy") &&
              strstr(o, "model saved to"), "Ctrl-C: the report and the saved model: %s", o);
    int rc = RUN("eval", out, CAR, "--json");
    CHECK(rc == 0 && json_number(out_buf, "accuracy", NULL) > 0.5, "the model saved at Ctrl-C loads: %s", err_buf);
    rc = RUN("train", CAR, "--target", "class", "--seed", "3", "--epochs", EPOCHS, "--resume", c3, "--out", fin,
             "--quiet");
    CHECK(rc == 0 && same_bytes(ref, fin), "resumed after Ctrl-C: the reference model: %s",
          err_buf);
}

int main(void) {
    kt_cli_begin();
    test_library(true);
    test_library(false);
    long ref_ms = test_cli_resume();
    test_cli_kill(ref_ms);
    test_cli_interrupt();
    return kt_cli_end("checkpoint");
}
