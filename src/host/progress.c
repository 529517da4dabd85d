/*
 * progress.c - the progress bar and per-epoch lines (host side).  Redraws
 * at most ten times a second so a fast loop is not slowed by the terminal.
 */
#include "host/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

#define now_seconds eml_wall_seconds

void eml_progress_init(eml_progress *p, int quiet)
{
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->last_draw = 0;
}

static void fmt_time(char *buf, size_t cap, double s)
{
    if (s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
}

void eml_progress_cb(void *user, const eml_train_progress *tp)
{
    eml_progress *p = user;
    if (p->quiet) return;
    char eta[32], el[32];
    fmt_time(eta, sizeof(eta), tp->eta_seconds);
    fmt_time(el, sizeof(el), tp->seconds);
    if (tp->resume_event) {
        if (tp->resumed_step < 0)
            fprintf(stderr, "resume: the mirror holds no committed state yet; "
                            "starting from the beginning\n");
        else
            fprintf(stderr, "resume: continuing from step %ld of %ld (epoch "
                            "%d)\n",
                    tp->resumed_step, tp->batches, tp->epoch);
        fflush(stderr);
        return;
    }
    if (tp->epoch_done) {
        if (p->tty) fputs("\r\033[K", stderr);
        fprintf(stderr,
                "epoch %d/%d: loss %.4f, train accuracy %.2f%%", tp->epoch,
                tp->epochs, tp->loss, 100.0 * tp->train_accuracy);
        if (tp->test_accuracy >= 0)
            fprintf(stderr, ", test accuracy %.2f%%", 100.0 * tp->test_accuracy);
        fprintf(stderr, ", %.0f images/s, %s elapsed\n",
                tp->images_per_second, el);
        fflush(stderr);
        return;
    }
    if (!p->tty) return;
    double now = now_seconds();
    if (now - p->last_draw < 0.1 && tp->batch != tp->batches) return;
    p->last_draw = now;
    const int width = 24;
    int filled = (int)((double)width * (double)tp->batch /
                       (double)(tp->batches ? tp->batches : 1));
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    fprintf(stderr,
            "\r\033[Kepoch %d/%d [%s] %ld/%ld loss %.4f %.0f img/s ETA %s",
            tp->epoch, tp->epochs, bar, tp->batch, tp->batches, tp->loss,
            tp->images_per_second, eta);
    fflush(stderr);
}
