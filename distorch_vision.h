/**
 * @file distorch_vision.h
 * @brief C ABI of the distorch-vision plugin: CLIP Vision encoders run as per-block ONNX
 *        Runtime sessions, placed across GPUs and the CPU by a DisTorch2 planner.
 *
 * Conventions (they hold for every function below):
 * - Functions return a ::dv_status; ::DV_OK (0) is success. On failure a message is kept
 *   per thread for dv_last_error(), and every out-parameter that is a handle, string
 *   or number is set to 0 / NULL (a ::dv_tensor the caller passed is left unchanged).
 *   A successful call clears the message.
 * - No call ever unwinds or aborts because of bad input: NULL pointers, wrong buffer sizes,
 *   unknown or already freed handles are reported as status codes. Internal bugs are
 *   reported as ::DV_ERR_PANIC.
 * - Models (::dv_model) and outputs (::dv_outputs) are opaque 64-bit ids, never pointers.
 *   0 is never a valid id. Ids are checked on every call and never reused, so a stale id
 *   (after dv_model_unload() / dv_outputs_free()) gives ::DV_ERR_INVALID_HANDLE.
 * - Every object the library returns has a free function: strings dv_string_free(),
 *   models dv_model_unload(), outputs dv_outputs_free(). Free functions accept 0 / NULL
 *   as a no-op and reject a second free with ::DV_ERR_INVALID_HANDLE.
 * - All functions may be called from several threads at once. Several threads may encode
 *   with the same model concurrently; different models run independently.
 * - Strings passed in are NUL-terminated UTF-8 and only read during the call.
 *
 * Building and linking a host (Linux):
 * - Either load the plugin at run time (what tests/c_host/host.c does):
 *     cc -I<checkout> host.c -ldl                      then dlopen("…/libdistorch_vision.so")
 *   and bind each function with dlsym(), typed as `__typeof__(dv_model_load) *`.
 * - Or link it at build time, with an rpath so the host finds it without LD_LIBRARY_PATH:
 *     cc -I<checkout> host.c -L<checkout>/target/release -ldistorch_vision \
 *        -Wl,-rpath,'$ORIGIN'          (library copied beside the host executable), or
 *        -Wl,-rpath,<checkout>/target/release
 *   (macOS: libdistorch_vision.dylib and -Wl,-rpath,@loader_path.)
 * - ONNX Runtime 1.31.1 is not linked: the plugin dlopen()s it on dv_init() or the first
 *   load, from the path given to dv_init(), else ORT_DYLIB_PATH, else the checkout's
 *   .runtime/ folder (when the plugin was built in one), else libonnxruntime.so.1.31.1 in
 *   the plugin library's own folder, else the installed onnxruntime Python package. To ship
 *   a host, copy libonnxruntime.so.1.31.1 (and, for CUDA, libonnxruntime_providers_*.so)
 *   beside libdistorch_vision.so.
 * - dv_shutdown() releases ONNX Runtime before the host exits; the library also does it by
 *   itself at process exit or when it is unloaded, if the host never calls it.
 */
#ifndef DISTORCH_VISION_H
#define DISTORCH_VISION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI version of this header; compare with dv_abi_version() at run time. */
#define DV_ABI_VERSION 1

/** Status code returned by every function that can fail. */
typedef int32_t dv_status;

/** Status codes. */
enum {
    DV_OK = 0,                   /**< success */
    DV_ERR_INVALID_ARGUMENT = 1, /**< a value is malformed or out of range */
    DV_ERR_NOT_FOUND = 2,        /**< a file, model, device or output name does not exist */
    DV_ERR_IO = 3,               /**< reading or writing a file failed */
    DV_ERR_INVALID_MODEL = 4,    /**< the model file is broken or not a CLIP Vision model */
    DV_ERR_DOES_NOT_FIT = 5,     /**< the plan does not fit the devices' memory */
    DV_ERR_RUNTIME = 6,          /**< ONNX Runtime or CUDA is missing or refused the request */
    DV_ERR_NULL_POINTER = 7,     /**< a required pointer argument is NULL */
    DV_ERR_INVALID_HANDLE = 8,   /**< unknown, freed or unloaded model/outputs id or string */
    DV_ERR_SIZE_MISMATCH = 9,    /**< a buffer's element count does not match its shape */
    DV_ERR_STRUCT_SIZE = 10,     /**< a struct_size field is smaller than this library needs */
    DV_ERR_PANIC = 11,           /**< internal error (a bug); the library stays usable */
    DV_ERR_SHUT_DOWN = 12        /**< dv_shutdown() ran (or the process is exiting); see there */
};

/** Crop modes of dv_encode_image() (contract §4). */
enum {
    DV_CROP_CENTER = 0, /**< scale the short side to the model size, crop the centre */
    DV_CROP_NONE = 1    /**< resize to the model size, ignoring the aspect ratio */
};

/** Element types of output tensors. */
enum {
    DV_DTYPE_F32 = 1, /**< 32-bit IEEE float: every model output */
    DV_DTYPE_I64 = 2  /**< int64: a naflex model's spatial_shapes (each image's patch grid) */
};

/** A loaded model: an opaque id (0 = none). Free with dv_model_unload(). */
typedef uint64_t dv_model;

/** The result of one encode: an opaque id (0 = none). Free with dv_outputs_free(). */
typedef uint64_t dv_outputs;

/**
 * Options of dv_model_load(): the loader inputs of contract §1 and the model folders.
 * Initialise with dv_load_options_init(), then set fields. Later versions only append
 * fields; @c struct_size tells the library which version the caller was built with.
 * Version 1 ends after @c extra_model_paths; version 2 adds @c dtype; version 3 adds
 * @c donor_policy; version 4 adds @c micro_batch; version 5 adds @c cpu_engine and @c openvino_ep. A library older than the caller's header ignores fields it does not know:
 * to tell, set the newest field you need to a non-NULL sentinel before
 * dv_load_options_init(); a library that knows that version resets it to NULL.
 * The library only reads the strings during dv_model_load().
 */
typedef struct dv_load_options {
    size_t struct_size;      /**< sizeof(dv_load_options); set by dv_load_options_init() */
    const char *clip_vision; /**< required: path of a .safetensors CLIP Vision model, or a name in the model folders (ComfyUI's own CLIPVisionLoader calls this input clip_name) */
    const char *device;      /**< compute device "cpu", "cuda:N", or "xpu:N" (Intel GPU N through OpenVINO); NULL or "" = cuda:0 when a CUDA GPU exists, else cpu */
    double virtual_vram_gb;  /**< GiB of weights moved from device to donor_device, 0.0–128.0; default 4.0. A host's field always holds a number, so exactly 4.0 (the default) counts as "not set": with expert_mode_allocations it is then ignored without a warning; any other value counts as set */
    const char *donor_device; /**< where moved weights live; NULL = "cpu" */
    const char *expert_mode_allocations; /**< e.g. "cuda:0,60%;cpu,*"; NULL or "" = not set */
    int32_t eject_models;    /**< nonzero: release other loaded models from device first; default 1 */
    const char *graphs_dir;  /**< root folder of exported graphs; NULL = the default */
    const char *comfyui_path; /**< ComfyUI folder whose models/clip_vision resolves a model name in clip_vision; NULL = COMFYUI_PATH; borrowed */
    const char *extra_model_paths; /**< an extra_model_paths.yaml whose clip_vision: entries are searched too; NULL = none; borrowed */
    /* version 2 */
    const char *dtype;       /**< compute precision: "fp32" (default, ComfyUI parity), "fp16" (GPUs), "int8" (CPU), "bf16" (OpenVINO on CPUs with AMX or AVX512_BF16); NULL or "" = fp32; borrowed */
    /* version 3 */
    const char *donor_policy; /**< blocks homed on cpu while device is a GPU: "stream" their weights to the GPU each pass (default, as DisTorch) or "execute" them on the CPU; NULL or "" = stream; borrowed */
    /* version 4 */
    size_t micro_batch;      /**< cut each encode into micro-batches of N images that flow through the device segments concurrently (the CLI's --micro-batch); 0 = off (default) */
    /* version 5 */
    const char *cpu_engine;  /**< what runs the CPU blocks: "auto" (OpenVINO when its plugin is found and the dtype runs there, else MLAS), "mlas" (ONNX Runtime's own) or "openvino"; NULL or "" = auto; borrowed */
    const char *openvino_ep; /**< the OpenVINO plugin library (libonnxruntime_providers_openvino_plugin.so) or a folder holding it; NULL or "" = searched (DISTORCH_OPENVINO_EP, the checkout's .runtime/openvino/, the onnxruntime_ep_openvino Python package); one per process; borrowed */
} dv_load_options;

/**
 * One output tensor, as filled by dv_outputs_get() / dv_outputs_get_index(). Set
 * @c struct_size to sizeof(dv_tensor) before the call. All pointers are borrowed from the
 * ::dv_outputs object and stay valid until dv_outputs_free() on it.
 */
typedef struct dv_tensor {
    size_t struct_size;   /**< in: sizeof(dv_tensor) */
    const char *name;     /**< output name, e.g. "image_embeds" */
    const void *data;     /**< contiguous row-major elements */
    int32_t dtype;        /**< ::DV_DTYPE_F32 */
    size_t ndim;          /**< number of dimensions */
    const int64_t *shape; /**< ndim sizes; shape[0] is the batch */
    size_t numel;         /**< number of elements */
    size_t nbytes;        /**< size of data in bytes */
} dv_tensor;

/** @return the library version ("0.1.0"); static storage, never free it. */
const char *dv_version(void);

/** @return the ABI version of the loaded library; equal to ::DV_ABI_VERSION when compatible. */
uint32_t dv_abi_version(void);

/** @return a static name for @p status ("DV_OK", "DV_ERR_NOT_FOUND", …); never NULL, never free it. */
const char *dv_status_string(dv_status status);

/**
 * @return the message of the calling thread's last failed call ("" when the last call
 * succeeded). Never NULL. Owned by the library; valid until the next dv_ call on this thread.
 */
const char *dv_last_error(void);

/**
 * Loads ONNX Runtime 1.31.1. Optional: the first load or encode does it with the default
 * search (ORT_DYLIB_PATH, the checkout's .runtime/, the onnxruntime Python package).
 * @param ort_library path of libonnxruntime (borrowed for the call), or NULL for the default search.
 * @return ::DV_ERR_RUNTIME when the library cannot be found or loaded, ::DV_ERR_INVALID_ARGUMENT
 *         when another path was already loaded in this process, ::DV_ERR_SHUT_DOWN after
 *         dv_shutdown() (see there).
 */
dv_status dv_init(const char *ort_library);

/**
 * Shuts the library down: releases every model's sessions, then ONNX Runtime's environment,
 * which joins its thread pool. Call it before the process exits (e.g. from an atexit hook,
 * with no encode running); otherwise the pool's threads are still running while exit
 * handlers free memory. When the host never calls it, the library does the same at process exit (from an
 * exit handler registered by the first initialisation, so it runs before ONNX Runtime's own
 * static destructors) and when the library is unloaded with dlclose(). Calling it twice,
 * or before anything was loaded, is harmless.
 *
 * Afterwards:
 * - model handles are invalid: every call on one, dv_model_unload() included, returns
 *   ::DV_ERR_INVALID_HANDLE with a message naming dv_shutdown() (there is nothing left to free);
 * - dv_model_load(), dv_encode_pixels(), dv_encode_patches() and dv_encode_image() return
 *   ::DV_ERR_SHUT_DOWN;
 * - outputs objects and strings are plain memory: they stay valid until freed as usual;
 *   dv_version(), dv_status_string(), dv_last_error(), dv_list_devices(),
 *   dv_live_objects() and dv_load_options_init() keep working;
 * - dv_init() tries to start ONNX Runtime again. This build cannot: the ort crate it uses
 *   allows one environment per process, so dv_init() returns ::DV_ERR_SHUT_DOWN with a
 *   message saying so, and a new process is the way to encode again.
 * An encode still running on another thread keeps its sessions until it returns.
 *
 * ONNX Runtime 1.29+ on Linux would also start a 1DS telemetry client whose thread outlives
 * the environment and races ONNX Runtime's own static destructors at exit; the library sets
 * ORT_DISABLE_TELEMETRY=1 before loading ONNX Runtime (unless the host set it) so it never starts.
 */
dv_status dv_shutdown(void);

/**
 * Lists the devices this process sees, as a JSON array of
 * {"device","name","total_bytes","free_bytes",…}.
 * @param json_out receives a NUL-terminated string owned by the caller: free it with dv_string_free().
 */
dv_status dv_list_devices(char **json_out);

/**
 * Frees a string returned by this library. NULL is a no-op.
 * @return ::DV_ERR_INVALID_HANDLE when @p s was not returned by this library or was already freed.
 */
dv_status dv_string_free(char *s);

/**
 * Counts live objects (for leak checks). Each pointer may be NULL.
 * @param models receives the number of loaded models
 * @param outputs receives the number of outputs objects not yet freed
 * @param strings receives the number of strings not yet freed
 */
dv_status dv_live_objects(size_t *models, size_t *outputs, size_t *strings);

/**
 * Lists the models a host can offer for @c clip_vision (a model dropdown): every vision
 * tower in the model folders, found as dv_model_load() resolves names (contract §2.5), as JSON:
 * {"folders": [path, …], "searched": [{"path","exists"}],
 *  "models": [{"name","path","folder","bytes","family","problem"?}],
 *  "skipped": [{"path","reason"}]}.
 * "name" is what to pass as clip_vision; "family" is null and "problem" says why when a
 * file looks like a vision tower but cannot be loaded; "skipped" lists .safetensors files
 * that are not vision towers. No folders, or none with models, is success with an empty list.
 * @param comfyui_path ComfyUI folder whose models/clip_vision is searched; NULL or "" = COMFYUI_PATH
 * @param extra_model_paths an extra_model_paths.yaml; NULL or "" = <comfyui>/extra_model_paths.yaml when present
 * @param json_out receives a NUL-terminated string owned by the caller: free it with dv_string_free().
 * @return ::DV_ERR_NOT_FOUND when @p extra_model_paths names a missing file,
 *         ::DV_ERR_INVALID_ARGUMENT when it cannot be parsed.
 */
dv_status dv_list_models(const char *comfyui_path, const char *extra_model_paths, char **json_out);

/**
 * Fills @p opts with the contract §1 defaults (all strings NULL, virtual_vram_gb 4.0,
 * eject_models 1) and sets opts->struct_size.
 * @param opts caller-owned struct to fill
 * @param struct_size the caller's sizeof(dv_load_options)
 */
dv_status dv_load_options_init(dv_load_options *opts, size_t struct_size);

/**
 * Loads a model: plans its blocks across the devices, exports (or reuses) its graphs and
 * builds the sessions. Bad fields are reported here with a message naming them.
 * @param opts read during the call only
 * @param model_out receives the model id; free it with dv_model_unload()
 */
dv_status dv_model_load(const dv_load_options *opts, dv_model *model_out);

/**
 * Unloads a model. Encodes already running on it in other threads complete normally and
 * the sessions are released when the last one ends; the id is invalid as soon as this
 * returns. 0 is a no-op.
 * @return ::DV_ERR_INVALID_HANDLE for an unknown or already unloaded id.
 */
dv_status dv_model_unload(dv_model model);

/**
 * The model's placement plan as JSON (contract §5.4: compute_device, mode, model_bytes,
 * blocks, devices, warnings).
 * @param json_out receives a string owned by the caller: free it with dv_string_free().
 */
dv_status dv_model_plan_json(dv_model model, char **json_out);

/**
 * The model's placement plan as the table the CLI's `plan` prints (devices with budget,
 * assigned GiB and share; segments with home and exec devices), for a host's log.
 * @param text_out receives a string owned by the caller: free it with dv_string_free().
 */
dv_status dv_model_plan_text(dv_model model, char **text_out);

/**
 * The outputs an encode returns when @c outputs is NULL or "", as a JSON array of names in
 * contract §3 order (e.g. ["last_hidden_state","image_embeds","penultimate_hidden_states"]).
 * Outputs computed only on request are not listed.
 * @param json_out receives a string owned by the caller: free it with dv_string_free().
 */
dv_status dv_model_outputs_json(dv_model model, char **json_out);

/**
 * What the model is, as a JSON object: {"path", "family" (e.g. "SigLIP so400m/14-384"),
 * "kind" ("clip", "siglip", "siglip2" (naflex), "dinov2" or "dinov3"), "image_size",
 * "patch_size", "hidden_size", "num_layers", "tokens", "llava", "outputs" (as dv_model_outputs_json), "on_request"
 * (outputs computed only when named, e.g. ["all_hidden_states"])}. A host that mirrors
 * another loader per family reads it (ComfyUI returns all_hidden_states for SigLIP only).
 * @param json_out receives a string owned by the caller: free it with dv_string_free().
 */
dv_status dv_model_info_json(dv_model model, char **json_out);

/**
 * What decides the model's rows, as a JSON object: "model_id" (content hash of the weights, the
 * export's id), "family", "config" (sizes, activation, image size) and "dtype" (compute
 * precision): the fields a sharded `encode --resume` compares, for a host's own resume.
 * @param json_out receives a string owned by the caller: free it with dv_string_free().
 */
dv_status dv_model_identity_json(dv_model model, char **json_out);

/**
 * @param size_out receives the model's input image size S (pixels are [B,3,S,S]); 0 for a
 *        SigLIP2 naflex model, which takes patches of any grid (see dv_model_patching()).
 */
dv_status dv_model_image_size(dv_model model, uint32_t *size_out);

/**
 * A SigLIP2 naflex model's patching (contract §4b): images keep their aspect ratio and are cut
 * into a grid of at most N square patches of P pixels; both 0 for a model of fixed size.
 * @param patch_size_out receives P (a patch is 3·P² floats, laid out row, column, channel)
 * @param num_patches_out receives N
 */
dv_status dv_model_patching(dv_model model, uint32_t *patch_size_out, uint32_t *num_patches_out);

/**
 * Encodes preprocessed pixels (NCHW f32, exactly as the CLI's `encode --pixels`).
 * @param pixels B×C×H×W floats, row-major; borrowed for the call
 * @param count number of floats in @p pixels; must equal B·C·H·W (else ::DV_ERR_SIZE_MISMATCH)
 * @param outputs NULL or "" for every output the model has but all_hidden_states, else
 *        comma-separated names ("last_hidden_state,image_embeds,penultimate_hidden_states,
 *        mm_projected,all_hidden_states"); all_hidden_states ([B, L, T, D], every layer's
 *        output) is computed only when named
 * @param batch_size images per forward pass; 0 = 8
 * @param outputs_out receives the outputs id; free it with dv_outputs_free()
 */
dv_status dv_encode_pixels(dv_model model, const float *pixels, size_t count,
                           size_t b, size_t c, size_t h, size_t w,
                           const char *outputs, size_t batch_size,
                           dv_outputs *outputs_out);

/**
 * Encodes a SigLIP2 naflex model's patches, as Hugging Face's processor and the CLI's
 * `preprocess` give them: image i's first rows·cols patch rows, then padding (never attended
 * to). The outputs' token tensors hold N = num_patches rows an image, the first rows·cols its
 * patches in row-major order and the rest zero; they end with ::DV_DTYPE_I64
 * "spatial_shapes" [B, 2], the grids again, so a host can cut each image's tokens out.
 * @param patches B×T×D floats, row-major, 1 ≤ T ≤ N, D = 3·P² (dv_model_patching()); borrowed
 * @param count number of floats in @p patches; must equal B·T·D (else ::DV_ERR_SIZE_MISMATCH)
 * @param spatial_shapes 2·B int64: each image's grid, rows then columns (rows·cols ≤ T); borrowed
 * @param shapes_count number of values in @p spatial_shapes; must equal 2·B
 * @param outputs, batch_size, outputs_out as dv_encode_pixels()
 */
dv_status dv_encode_patches(dv_model model, const float *patches, size_t count,
                            size_t b, size_t t, size_t d,
                            const int64_t *spatial_shapes, size_t shapes_count,
                            const char *outputs, size_t batch_size,
                            dv_outputs *outputs_out);

/**
 * Encodes a ComfyUI IMAGE buffer: preprocesses it (contract §4: drop alpha, resize, crop,
 * quantise, normalise with the model's mean/std; for a naflex model contract §4b, where
 * @p crop has no effect, and the outputs are those of dv_encode_patches()) and encodes.
 * @param image B×H×W×C floats in 0..1, row-major; borrowed for the call. C = 3 (RGB),
 *        4 (RGBA: alpha dropped) or more (the first 3 used), or 1 (grey, broadcast to RGB as
 *        ComfyUI's clip_preprocess does); C = 2 is ::DV_ERR_INVALID_ARGUMENT
 * @param count number of floats in @p image; must equal B·H·W·C
 * @param crop ::DV_CROP_CENTER or ::DV_CROP_NONE
 * @param outputs, batch_size, outputs_out as dv_encode_pixels()
 */
dv_status dv_encode_image(dv_model model, const float *image, size_t count,
                          size_t b, size_t h, size_t w, size_t c, int32_t crop,
                          const char *outputs, size_t batch_size,
                          dv_outputs *outputs_out);

/**
 * Decodes one encoded image file held in memory (PNG, JPEG, WebP, BMP, GIF, TIFF) and
 * preprocesses it exactly as the CLI's `encode --images` does (EXIF orientation, RGB,
 * contract §4 resize/crop/normalise with the model's mean/std), for dv_encode_pixels().
 * An unreadable image is ::DV_ERR_INVALID_ARGUMENT (or ::DV_ERR_IO) with a message naming it.
 * @param data, len the file's bytes; borrowed for the call
 * @param name NULL or a name for error messages (a path or key)
 * @param crop ::DV_CROP_CENTER or ::DV_CROP_NONE
 * @param pixels_out receives 3×S×S floats (S from dv_model_image_size())
 * @param count floats at @p pixels_out; must equal 3·S·S (else ::DV_ERR_SIZE_MISMATCH)
 */
dv_status dv_preprocess_encoded(dv_model model, const uint8_t *data, size_t len,
                                const char *name, int32_t crop,
                                float *pixels_out, size_t count);

/**
 * As dv_preprocess_encoded(), for a SigLIP2 naflex model (contract §4b): the image's patches
 * for dv_encode_patches(). A model of fixed size is ::DV_ERR_INVALID_ARGUMENT.
 * @param patches_out receives N·3·P² floats (dv_model_patching()): the image's rows·cols
 *        patches, then zeros
 * @param count floats at @p patches_out; must equal N·3·P² (else ::DV_ERR_SIZE_MISMATCH)
 * @param grid_out receives 2 int64: the image's grid, rows then columns
 */
dv_status dv_preprocess_encoded_patches(dv_model model, const uint8_t *data, size_t len,
                                        const char *name, float *patches_out, size_t count,
                                        int64_t *grid_out);

/** @param count_out receives the number of tensors in @p outputs. */
dv_status dv_outputs_count(dv_outputs outputs, size_t *count_out);

/**
 * Looks up an output tensor by name.
 * @param tensor_out caller-owned, struct_size set; its pointers are borrowed from @p outputs
 * @return ::DV_ERR_NOT_FOUND when @p outputs has no tensor called @p name.
 */
dv_status dv_outputs_get(dv_outputs outputs, const char *name, dv_tensor *tensor_out);

/**
 * Looks up an output tensor by index, 0 ≤ index < dv_outputs_count() (contract §3 order).
 * @param tensor_out as dv_outputs_get()
 */
dv_status dv_outputs_get_index(dv_outputs outputs, size_t index, dv_tensor *tensor_out);

/**
 * Frees an outputs object and every tensor pointer borrowed from it. 0 is a no-op.
 * @return ::DV_ERR_INVALID_HANDLE for an unknown or already freed id.
 */
dv_status dv_outputs_free(dv_outputs outputs);

#ifdef __cplusplus
}
#endif

#endif /* DISTORCH_VISION_H */
