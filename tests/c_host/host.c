/*
 * A minimal C host for the distorch-vision plugin: dlopen()s the library, binds every
 * function through the prototypes of distorch_vision.h, encodes a fixture, checks the
 * outputs against expected values, and exercises the misuse paths.
 *
 * usage: host PLUGIN.so ORT_LIBRARY MODEL GRAPHS_DIR DATA_DIR [END [COMFYUI_DIR]]
 *   MODEL                        a .safetensors path, or (with COMFYUI_DIR) a model name:
 *                                dv_list_models() must list it, and it is loaded by name
 *   END: how the host ends (default "shutdown"):
 *     shutdown  calls dv_shutdown() with a model still loaded and checks what follows
 *     exit      returns from main without dv_shutdown() (the library's exit handler does it)
 *     dlclose   unloads the library without dv_shutdown(), then returns
 *   DATA_DIR/pixels.f32          raw little-endian f32, [2,3,S,S]
 *   DATA_DIR/manifest.txt        lines "name ndim d0 d1 ..." for each expected output
 *   DATA_DIR/<name>.f32          raw expected values
 * Exit status 0 when every check passed.
 */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distorch_vision.h"

static int failures = 0;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                   \
            fprintf(stderr, "\n");                                          \
            failures++;                                                     \
        }                                                                   \
    } while (0)

/* Function pointers typed from the header's own prototypes. */
#define API(X)                                                                 \
    X(dv_version) X(dv_abi_version) X(dv_status_string) X(dv_last_error)      \
    X(dv_init) X(dv_shutdown) X(dv_list_devices) X(dv_string_free) X(dv_live_objects)        \
    X(dv_load_options_init) X(dv_model_load) X(dv_model_unload)               \
    X(dv_model_plan_json) X(dv_model_image_size) X(dv_encode_pixels)          \
    X(dv_encode_image) X(dv_outputs_count) X(dv_outputs_get)                  \
    X(dv_outputs_get_index) X(dv_outputs_free) X(dv_list_models)              \
    X(dv_model_patching) X(dv_encode_patches) X(dv_preprocess_encoded_patches)

#define DECLARE(name) static __typeof__(name) *p_##name;
API(DECLARE)

static float *read_f32(const char *path, size_t *count) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *buf = malloc((size_t)n);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *count = (size_t)n / sizeof(float);
    return buf;
}

int main(int argc, char **argv) {
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: %s PLUGIN ORT_LIBRARY MODEL GRAPHS_DIR DATA_DIR [END [COMFYUI_DIR]]\n", argv[0]);
        return 2;
    }
    const char *plugin = argv[1], *ort = argv[2], *model_path = argv[3];
    const char *graphs = argv[4], *data_dir = argv[5];
    const char *end = argc >= 7 ? argv[6] : "shutdown";
    if (strcmp(end, "shutdown") != 0 && strcmp(end, "exit") != 0 && strcmp(end, "dlclose") != 0) {
        fprintf(stderr, "END is %s; valid: shutdown, exit, dlclose\n", end);
        return 2;
    }
    const char *comfyui = argc == 8 ? argv[7] : NULL;
    char path[4096];

    void *lib = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "dlopen %s: %s\n", plugin, dlerror());
        return 1;
    }
#define BIND(name)                                                    \
    p_##name = (__typeof__(name) *)dlsym(lib, #name);                 \
    if (!p_##name) {                                                  \
        fprintf(stderr, "missing symbol %s\n", #name);                \
        return 1;                                                     \
    }
    API(BIND)

    printf("distorch-vision %s, ABI %u\n", p_dv_version(), p_dv_abi_version());
    CHECK(p_dv_abi_version() == DV_ABI_VERSION, "ABI %u", p_dv_abi_version());
    CHECK(strcmp(p_dv_status_string(DV_ERR_SIZE_MISMATCH), "DV_ERR_SIZE_MISMATCH") == 0, "name");

    dv_status st = p_dv_init(ort);
    CHECK(st == DV_OK, "dv_init: %s", p_dv_last_error());

    char *json = NULL;
    st = p_dv_list_devices(&json);
    CHECK(st == DV_OK && json && strstr(json, "\"cpu\""), "devices");
    if (json) printf("devices: %s\n", json);
    CHECK(p_dv_string_free(json) == DV_OK, "free devices");
    CHECK(p_dv_string_free(json) == DV_ERR_INVALID_HANDLE, "double free of a string");

    if (comfyui) {
        /* A model dropdown: the names dv_model_load() resolves, vision towers only. */
        char quoted[1024];
        snprintf(quoted, sizeof quoted, "\"name\":\"%s\"", model_path);
        st = p_dv_list_models(comfyui, NULL, &json);
        CHECK(st == DV_OK && json, "list models: %s", p_dv_last_error());
        if (json) {
            printf("models: %.200s...\n", json);
            CHECK(strstr(json, quoted) != NULL, "%s not listed", model_path);
            const char *models = strstr(json, "\"models\"");
            const char *skipped = strstr(json, "\"skipped\"");
            const char *expected = strstr(json, "expected.safetensors");
            CHECK(models && skipped && expected, "models, skipped, expected.safetensors");
            /* expected.safetensors is not a vision tower: only under "skipped". */
            CHECK(expected && skipped && (skipped < models ? expected > skipped && expected < models
                                                           : expected > skipped),
                  "expected.safetensors listed as a model");
        }
        CHECK(p_dv_string_free(json) == DV_OK, "free models");
        json = NULL;
    }

    dv_load_options opts;
    opts.donor_policy = "sentinel";
    CHECK(p_dv_load_options_init(&opts, sizeof opts) == DV_OK, "options init");
    CHECK(opts.virtual_vram_gb == 4.0 && opts.eject_models == 1, "defaults");
    CHECK(opts.dtype == NULL && opts.donor_policy == NULL, "version 3 fields reset");
    opts.clip_vision = model_path;
    opts.comfyui_path = comfyui;
    opts.device = "cpu";
    opts.graphs_dir = graphs;
    opts.eject_models = 0;
    opts.donor_policy = "execute";
    dv_model model = 0;
    st = p_dv_model_load(&opts, &model);
    CHECK(st == DV_OK && model != 0, "load: %s", p_dv_last_error());
    if (st != DV_OK) return 1;

    st = p_dv_model_plan_json(model, &json);
    CHECK(st == DV_OK && strstr(json, "\"compute_device\""), "plan");
    CHECK(st == DV_OK && strstr(json, "\"donor_policy\":\"execute\""), "donor_policy in the plan");
    printf("plan: %.120s...\n", json);
    p_dv_string_free(json);

    uint32_t size = 0;
    CHECK(p_dv_model_image_size(model, &size) == DV_OK && size > 0, "image size");

    size_t n_px = 0;
    snprintf(path, sizeof path, "%s/pixels.f32", data_dir);
    float *px = read_f32(path, &n_px);
    CHECK(px != NULL, "read %s", path);
    if (!px) return 1;
    size_t b = n_px / (3 * (size_t)size * size);

    dv_outputs out = 0;
    st = p_dv_encode_pixels(model, px, n_px, b, 3, size, size, NULL, 0, &out);
    CHECK(st == DV_OK && out != 0, "encode: %s", p_dv_last_error());
    size_t count = 0;
    CHECK(p_dv_outputs_count(out, &count) == DV_OK, "count");

    /* Compare every expected output. */
    snprintf(path, sizeof path, "%s/manifest.txt", data_dir);
    FILE *mf = fopen(path, "r");
    CHECK(mf != NULL, "manifest");
    size_t n_expected = 0;
    char name[256];
    int ndim;
    while (mf && fscanf(mf, "%255s %d", name, &ndim) == 2) {
        int64_t shape[8];
        for (int i = 0; i < ndim && i < 8; i++) {
            long long d;
            if (fscanf(mf, "%lld", &d) != 1) d = -1;
            shape[i] = d;
        }
        n_expected++;
        dv_tensor t;
        memset(&t, 0, sizeof t);
        t.struct_size = sizeof t;
        st = p_dv_outputs_get(out, name, &t);
        CHECK(st == DV_OK, "get %s: %s", name, p_dv_last_error());
        if (st != DV_OK) continue;
        CHECK(t.dtype == DV_DTYPE_F32, "%s dtype", name);
        CHECK(t.ndim == (size_t)ndim, "%s ndim %zu", name, t.ndim);
        for (int i = 0; i < ndim && (size_t)i < t.ndim; i++)
            CHECK(t.shape[i] == shape[i], "%s dim %d: %lld vs %lld", name, i,
                  (long long)t.shape[i], (long long)shape[i]);
        snprintf(path, sizeof path, "%s/%s.f32", data_dir, name);
        size_t n_want = 0;
        float *want = read_f32(path, &n_want);
        CHECK(want && n_want == t.numel, "%s: %zu expected values, %zu got", name, n_want, t.numel);
        if (want && n_want == t.numel) {
            const float *got = t.data;
            double worst = 0;
            for (size_t i = 0; i < n_want; i++) {
                double d = fabs((double)got[i] - (double)want[i]);
                if (d > worst) worst = d;
            }
            printf("%s [", name);
            for (size_t i = 0; i < t.ndim; i++) printf(i ? ",%lld" : "%lld", (long long)t.shape[i]);
            printf("] max |diff| %.3g\n", worst);
            CHECK(worst <= 1e-4, "%s differs by %g", name, worst);
        }
        free(want);
    }
    if (mf) fclose(mf);
    CHECK(n_expected > 0 && n_expected == count, "%zu outputs, %zu expected", count, n_expected);

    /* A ComfyUI IMAGE buffer (RGBA) of the model size. */
    size_t n_img = b * size * size * 4;
    float *img = calloc(n_img, sizeof(float));
    for (size_t i = 0; i < n_img; i++) img[i] = (float)(i % 256) / 255.0f;
    dv_outputs out2 = 0;
    st = p_dv_encode_image(model, img, n_img, b, size, size, 4, DV_CROP_CENTER,
                           "penultimate_hidden_states, image_embeds", 0, &out2);
    CHECK(st == DV_OK, "encode image: %s", p_dv_last_error());
    CHECK(p_dv_outputs_count(out2, &count) == DV_OK && count == 2, "two outputs");
    dv_tensor t2 = {.struct_size = sizeof(dv_tensor)};
    CHECK(p_dv_outputs_get_index(out2, 0, &t2) == DV_OK && t2.shape[0] == (int64_t)b &&
              strcmp(t2.name, "image_embeds") == 0, "contract order, batch");
    CHECK(p_dv_outputs_free(out2) == DV_OK, "free");

    /* Misuse. */
    dv_outputs bad = 99;
    CHECK(p_dv_encode_pixels(model, px, n_px - 1, b, 3, size, size, NULL, 0, &bad) ==
              DV_ERR_SIZE_MISMATCH, "short buffer");
    CHECK(bad == 0, "out zeroed");
    CHECK(strlen(p_dv_last_error()) > 0, "message");
    printf("short buffer: %s\n", p_dv_last_error());
    CHECK(p_dv_encode_image(model, img, n_img, b, size, size, 3, DV_CROP_CENTER, NULL, 0, &bad) ==
              DV_ERR_SIZE_MISMATCH, "C mismatch");
    CHECK(p_dv_encode_pixels(model, NULL, n_px, b, 3, size, size, NULL, 0, &bad) ==
              DV_ERR_NULL_POINTER, "NULL pixels");
    CHECK(p_dv_encode_pixels(model, px, n_px, b, 3, size, size, NULL, 0, NULL) ==
              DV_ERR_NULL_POINTER, "NULL out");
    /* SigLIP2 naflex calls on a model of fixed size: no patching, patches refused. */
    uint32_t patch = 9, npatch = 9;
    CHECK(p_dv_model_patching(model, &patch, &npatch) == DV_OK && patch == 0 && npatch == 0,
          "no patching on a square model");
    CHECK(p_dv_model_patching(model, NULL, &npatch) == DV_ERR_NULL_POINTER && npatch == 0,
          "NULL patch_size_out");
    int64_t grid[2] = {1, 1};
    CHECK(p_dv_encode_patches(model, px, 48, 1, 1, 48, grid, 2, NULL, 0, &bad) ==
              DV_ERR_INVALID_ARGUMENT && bad == 0, "patches to a square model");
    printf("patches to a square model: %s\n", p_dv_last_error());
    CHECK(p_dv_encode_patches(model, px, 48, 1, 1, 48, NULL, 2, NULL, 0, &bad) ==
              DV_ERR_NULL_POINTER, "NULL spatial_shapes");
    CHECK(p_dv_encode_patches(model, px, 48, 1, 1, 48, grid, 1, NULL, 0, &bad) ==
              DV_ERR_SIZE_MISMATCH, "spatial_shapes count");
    CHECK(p_dv_preprocess_encoded_patches(model, (const uint8_t *)"x", 1, NULL, px, 48, NULL) ==
              DV_ERR_NULL_POINTER, "NULL grid_out");
    dv_model scratch = 7;
    CHECK(p_dv_model_load(NULL, &scratch) == DV_ERR_NULL_POINTER, "NULL opts");
    CHECK(scratch == 0, "model out zeroed on failure");
    CHECK(p_dv_outputs_free(out) == DV_OK, "free outputs");
    CHECK(p_dv_outputs_free(out) == DV_ERR_INVALID_HANDLE, "double free of outputs");
    CHECK(p_dv_outputs_count(out, &count) == DV_ERR_INVALID_HANDLE, "use after free");
    CHECK(p_dv_model_unload(12345678) == DV_ERR_INVALID_HANDLE, "made-up handle");

    /* Unload, load again, unload, use after unload. */
    CHECK(p_dv_model_unload(model) == DV_OK, "unload");
    st = p_dv_model_load(&opts, &model);
    CHECK(st == DV_OK, "reload: %s", p_dv_last_error());
    CHECK(p_dv_model_unload(model) == DV_OK, "unload");
    CHECK(p_dv_model_unload(model) == DV_ERR_INVALID_HANDLE, "double unload");
    CHECK(p_dv_encode_pixels(model, px, n_px, b, 3, size, size, NULL, 0, &bad) ==
              DV_ERR_INVALID_HANDLE, "use after unload");
    printf("use after unload: %s\n", p_dv_last_error());

    size_t live_models = 9, live_outputs = 9, live_strings = 9;
    p_dv_live_objects(&live_models, &live_outputs, &live_strings);
    CHECK(live_models == 0 && live_outputs == 0 && live_strings == 0,
          "left alive: %zu models, %zu outputs, %zu strings", live_models, live_outputs,
          live_strings);

    /* The end of the host's life, with a model loaded and an outputs object alive. */
    st = p_dv_model_load(&opts, &model);
    CHECK(st == DV_OK, "load before the end: %s", p_dv_last_error());
    dv_outputs kept = 0;
    st = p_dv_encode_pixels(model, px, n_px, b, 3, size, size, "image_embeds", 0, &kept);
    CHECK(st == DV_OK, "encode before the end: %s", p_dv_last_error());
    if (strcmp(end, "shutdown") == 0) {
        CHECK(p_dv_shutdown() == DV_OK, "dv_shutdown: %s", p_dv_last_error());
        CHECK(p_dv_model_image_size(model, &size) == DV_ERR_INVALID_HANDLE &&
                  strstr(p_dv_last_error(), "dv_shutdown"), "model after shutdown: %s",
              p_dv_last_error());
        printf("model after shutdown: %s\n", p_dv_last_error());
        CHECK(p_dv_model_unload(model) == DV_ERR_INVALID_HANDLE, "unload after shutdown");
        dv_model again = 5;
        CHECK(p_dv_model_load(&opts, &again) == DV_ERR_SHUT_DOWN && again == 0,
              "load after shutdown: %s", p_dv_last_error());
        printf("load after shutdown: %s\n", p_dv_last_error());
        /* Outputs are plain memory: still readable, then freed as usual. */
        dv_tensor t3 = {.struct_size = sizeof(dv_tensor)};
        CHECK(p_dv_outputs_get(kept, "image_embeds", &t3) == DV_OK && t3.numel > 0,
              "outputs after shutdown: %s", p_dv_last_error());
        CHECK(p_dv_outputs_free(kept) == DV_OK, "free outputs after shutdown");
        st = p_dv_init(ort);
        CHECK(st == DV_ERR_SHUT_DOWN, "dv_init after shutdown gave %s", p_dv_status_string(st));
        printf("dv_init after shutdown: %s\n", p_dv_last_error());
        CHECK(p_dv_shutdown() == DV_OK, "second dv_shutdown");
        p_dv_live_objects(&live_models, &live_outputs, &live_strings);
        CHECK(live_models == 0 && live_outputs == 0 && live_strings == 0,
              "left alive after shutdown: %zu models, %zu outputs, %zu strings", live_models,
              live_outputs, live_strings);
    } else if (strcmp(end, "dlclose") == 0) {
        CHECK(p_dv_outputs_free(kept) == DV_OK, "free outputs");
        CHECK(dlclose(lib) == 0, "dlclose: %s", dlerror());
    } else {
        CHECK(p_dv_outputs_free(kept) == DV_OK, "free outputs");
    }

    free(px);
    free(img);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("OK\n");
    return 0;
}
