/*
 * test_augment.c - Darknet's geometric augmentation (augment.c): the
 * [net] keys parsed and their bad values refused; the identity warp
 * copies exactly; flips mirror exactly and about half the time; draws
 * depend on (seed, step, example) and nothing else; a 2x zoom of a flat
 * image stays flat; a rotation keeps a centred disk's mass.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "enclaveml/cfg.h"
#include "nn/train_internal.h"

enum { H = 28, W = 28, N = H * W };

static const char net_head[] =
    "[net]\nbatch=8\nheight=28\nwidth=28\nchannels=1\n";
static const char net_tail[] =
    "[connected]\noutput=10\nactivation=linear\n[softmax]\n";

static eml_status parse_with(const char *keys, eml_netcfg **cfg,
                             eml_err *err)
{
    char text[1024];
    snprintf(text, sizeof(text), "%s%s%s", net_head, keys, net_tail);
    return eml_cfg_parse(text, strlen(text), "a.cfg", cfg, err);
}

static void test_keys(void **state)
{
    (void)state;
    eml_netcfg *cfg = NULL;
    eml_err err;
    assert_int_equal(parse_with("", &cfg, &err), EML_OK);
    assert_int_equal(cfg->augment.on, 0);
    eml_cfg_free(cfg);

    assert_int_equal(parse_with("flip=1\nmin_crop=28\nmax_crop=34\n"
                                "angle=10\naspect=1.1\nhue=.1\n",
                                &cfg, &err),
                     EML_OK);
    const eml_augment_cfg *a = &cfg->augment;
    assert_true(a->on && a->flip && a->crop);
    assert_int_equal(a->min_crop, 28);
    assert_int_equal(a->max_crop, 34);
    assert_true(fabsf(a->angle - 10.0f) < 1e-6f);
    assert_true(fabsf(a->aspect - 1.1f) < 1e-6f);
    assert_string_equal(cfg->ignored, "hue");
    eml_cfg_free(cfg);

    /* Darknet's defaults: min_crop the smaller side, max_crop 2 w */
    assert_int_equal(parse_with("angle=5\n", &cfg, &err), EML_OK);
    assert_int_equal(cfg->augment.min_crop, 28);
    assert_int_equal(cfg->augment.max_crop, 56);
    assert_true(cfg->augment.crop && !cfg->augment.flip);
    eml_cfg_free(cfg);

    static const struct {
        const char *keys, *needle;
    } bad[] = {
        {"flip=2\n", "flip"},
        {"angle=-1\n", "angle"},
        {"angle=200\n", "angle"},
        {"aspect=0.05\n", "aspect"},
        {"aspect=17\n", "aspect"},
        {"min_crop=0\n", "min_crop"},
        {"min_crop=30\nmax_crop=20\n", "max_crop"},
        {"max_crop=abc\n", "max_crop"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg = NULL;
        memset(&err, 0, sizeof(err));
        eml_status st = parse_with(bad[i].keys, &cfg, &err);
        assert_int_not_equal(st, EML_OK);
        assert_null(cfg);
        if (strstr(err.msg, bad[i].needle) == NULL ||
            strncmp(err.msg, "a.cfg:", 6) != 0)
            fail_msg("%s: %d %s", bad[i].keys, (int)st, err.msg);
    }
}

static void picture(uint8_t *img)
{
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[y * W + x] = (uint8_t)((x * 7 + y * 3) % 256);
}

static void test_identity_and_flip(void **state)
{
    (void)state;
    uint8_t img[N];
    float out[N], ref[N];
    picture(img);
    for (int i = 0; i < N; i++) ref[i] = (float)img[i] * (1.0f / 255.0f);

    /* scale 1, no angle, no stretch: the warp samples the pixel grid */
    eml_augment_cfg id = {1, 0, 1, 28, 28, 0.0f, 1.0f};
    for (int b = 0; b < 20; b++) {
        eml_augment_image(&id, 1, 7, b, img, 1, H, W, out);
        for (int i = 0; i < N; i++)
            assert_true(fabsf(out[i] - ref[i]) < 1e-6f);
    }

    eml_augment_cfg flip = {1, 1, 0, 28, 28, 0.0f, 1.0f};
    int flipped = 0;
    for (int b = 0; b < 400; b++) {
        eml_augment_image(&flip, 1, 7, b, img, 1, H, W, out);
        int same = memcmp(out, ref, sizeof(out)) == 0;
        if (!same) {
            flipped++;
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    assert_true(out[y * W + x] == ref[y * W + (W - 1 - x)]);
        }
    }
    /* binomial(400, 1/2): 200 +- 10 */
    assert_in_range(flipped, 150, 250);
}

static void test_draws(void **state)
{
    (void)state;
    uint8_t img[N];
    float a[N], b[N];
    picture(img);
    eml_augment_cfg ac = {1, 1, 1, 28, 36, 20.0f, 1.2f};
    eml_augment_image(&ac, 5, 3, 9, img, 1, H, W, a);
    eml_augment_image(&ac, 5, 3, 9, img, 1, H, W, b);
    assert_memory_equal(a, b, sizeof(a));
    int differ = 0;
    eml_augment_image(&ac, 5, 3, 10, img, 1, H, W, b);
    differ += memcmp(a, b, sizeof(a)) != 0;
    eml_augment_image(&ac, 5, 4, 9, img, 1, H, W, b);
    differ += memcmp(a, b, sizeof(a)) != 0;
    eml_augment_image(&ac, 6, 3, 9, img, 1, H, W, b);
    differ += memcmp(a, b, sizeof(a)) != 0;
    assert_int_equal(differ, 3);
    for (int i = 0; i < N; i++) assert_true(a[i] >= 0.0f && a[i] <= 1.0f);
}

static void test_zoom_and_rotation(void **state)
{
    (void)state;
    uint8_t img[N];
    float out[N];
    /* twice the size: every output reads inside the image, except where
     * the bilinear weights reach one pixel past its last row or column */
    memset(img, 200, sizeof(img));
    eml_augment_cfg zoom = {1, 0, 1, 56, 56, 0.0f, 1.0f};
    for (int b = 0; b < 20; b++) {
        eml_augment_image(&zoom, 2, 1, b, img, 1, H, W, out);
        int flat = 0;
        for (int i = 0; i < N; i++)
            flat += fabsf(out[i] - 200.0f / 255.0f) < 1e-5f;
        assert_true(flat >= N - 2 * W);
    }
    /* a centred disk turned by up to 180 degrees keeps its mass */
    double mass = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            double dx = x + 0.5 - W / 2.0, dy = y + 0.5 - H / 2.0;
            img[y * W + x] = dx * dx + dy * dy < 64 ? 255 : 0;
            mass += img[y * W + x] / 255.0;
        }
    eml_augment_cfg turn = {1, 0, 1, 28, 28, 180.0f, 1.0f};
    for (int b = 0; b < 20; b++) {
        eml_augment_image(&turn, 2, 1, b, img, 1, H, W, out);
        double m = 0;
        for (int i = 0; i < N; i++) m += out[i];
        assert_true(fabs(m - mass) < 0.08 * mass);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_identity_and_flip),
        cmocka_unit_test(test_draws),
        cmocka_unit_test(test_zoom_and_rotation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
