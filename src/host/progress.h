/*
 * progress.h - training progress on stderr: a redrawn bar when stderr is a
 * terminal (epoch, batch, loss, images/s, ETA), one plain line per epoch
 * otherwise.  Host side.
 */
#ifndef EML_HOST_PROGRESS_H
#define EML_HOST_PROGRESS_H

#include "enclaveml/train.h"

typedef struct eml_progress {
    int tty;
    int quiet;
    double last_draw;
} eml_progress;

void eml_progress_init(eml_progress *p, int quiet);
/* An eml_progress_fn; user is the eml_progress. */
void eml_progress_cb(void *user, const eml_train_progress *tp);
#endif
