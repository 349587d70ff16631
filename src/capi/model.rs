//! Models: loading one from `dv_load_options`, unloading it, and what a host asks of a loaded
//! model (its plan as JSON or a table, its output names, what it is, its image size).

use std::ffi::c_char;
use std::sync::Arc;

use super::ffi::{guard, guard_out, guard_string_out, put, running, DvStatus, Fail, R};
use super::ffi::{DV_ERR_INVALID_HANDLE, DV_ERR_RUNTIME};
use super::handles;
use super::options::{self, DvLoadOptions};
use crate::loader::ClipVision;

/// The live model `id`, or why it is not one.
pub(super) fn live(id: u64) -> R<Arc<ClipVision>> {
    handles::model(id).ok_or_else(|| gone(id))
}

/// Why `id` is not a live model: released by `dv_shutdown`, or the generic reasons.
fn gone(id: u64) -> Fail {
    if handles::released_by_shutdown(id) {
        Fail::new(
            DV_ERR_INVALID_HANDLE,
            format!(
                "model handle {id} was released by dv_shutdown(); nothing is left to use or unload"
            ),
        )
    } else {
        Fail::handle("model", id)
    }
}

/// `dv_status dv_model_load(const dv_load_options *opts, dv_model *model_out)`.
///
/// # Safety
/// `opts` is NULL or points to `opts->struct_size` readable bytes; `model_out` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_load(
    opts: *const DvLoadOptions,
    model_out: *mut u64,
) -> DvStatus {
    if !model_out.is_null() {
        put(model_out, 0);
    }
    guard(|| {
        if opts.is_null() {
            return Err(Fail::null("opts"));
        }
        if model_out.is_null() {
            return Err(Fail::null("model_out"));
        }
        let lo = options::read(opts)?;
        running()?;
        let cv = ClipVision::load(&lo)?;
        put(model_out, handles::insert_model(cv));
        Ok(())
    })
}

/// `dv_status dv_model_unload(dv_model model)`.
#[no_mangle]
pub extern "C" fn dv_model_unload(model: u64) -> DvStatus {
    guard(|| {
        if model == 0 || handles::remove_model(model) {
            Ok(())
        } else {
            Err(gone(model))
        }
    })
}

/// `dv_status dv_model_plan_json(dv_model model, char **json_out)`.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_plan_json(model: u64, json_out: *mut *mut c_char) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        serde_json::to_string(&live(model)?.plan().to_json())
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the plan: {e}")))
    })
}

/// `dv_status dv_model_plan_text(dv_model model, char **text_out)`: the plan table the CLI's
/// `plan` prints (contract §5.4), for hosts that log it at load time as DisTorch does.
///
/// # Safety
/// `text_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_plan_text(model: u64, text_out: *mut *mut c_char) -> DvStatus {
    guard_string_out(text_out, "text_out", || {
        Ok(live(model)?.plan().render_table())
    })
}

/// `dv_status dv_model_outputs_json(dv_model model, char **json_out)`: the names an encode
/// returns when it asks for no outputs in particular, as a JSON array in contract §3 order.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_outputs_json(model: u64, json_out: *mut *mut c_char) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        // The same resolution an encode with no names does, so the two never disagree.
        let names = live(model)?.model().resolve_output_names(&[])?;
        serde_json::to_string(&names)
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the output names: {e}")))
    })
}

/// `dv_status dv_model_identity_json(dv_model model, char **json_out)`: what decides the
/// model's rows (weights' content id, family, configuration, compute dtype), the same fields a
/// sharded `encode --resume` compares, so a host's resume can refuse another model.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_identity_json(
    model: u64,
    json_out: *mut *mut c_char,
) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        let id = crate::job::batch::RunIdentity::of_model(&*live(model)?);
        serde_json::to_string(&id)
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the identity: {e}")))
    })
}

/// `dv_status dv_model_info_json(dv_model model, char **json_out)`: what the model is, for a
/// host that follows another loader's behaviour per family (ComfyUI returns
/// `all_hidden_states` for SigLIP towers only): `{"path", "family", "kind", "image_size",
/// "patch_size", "hidden_size", "num_layers", "tokens", "llava", "outputs", "on_request"}`.
/// `kind` is `"clip"`, `"siglip"`, `"siglip2"` (naflex), `"dinov2"` or `"dinov3"`; `outputs` is what
/// `dv_model_outputs_json` lists, `on_request` the outputs computed only when named.
///
/// # Safety
/// `json_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_info_json(model: u64, json_out: *mut *mut c_char) -> DvStatus {
    guard_string_out(json_out, "json_out", || {
        let cv = live(model)?;
        let m = cv.model();
        let c = &m.config;
        let info = serde_json::json!({
            "path": crate::paths::path_text(m.path()),
            "family": c.family,
            "kind": c.kind,
            "image_size": c.image_size,
            "patch_size": c.patch_size,
            "hidden_size": c.hidden_size,
            "num_layers": c.num_layers,
            "tokens": c.tokens,
            "llava": c.llava,
            "outputs": m.resolve_output_names(&[])?,
            "on_request": m.on_request_output_names(),
        });
        serde_json::to_string(&info)
            .map_err(|e| Fail::new(DV_ERR_RUNTIME, format!("serialising the model info: {e}")))
    })
}

/// `dv_status dv_model_image_size(dv_model model, uint32_t *size_out)`.
///
/// # Safety
/// `size_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_image_size(model: u64, size_out: *mut u32) -> DvStatus {
    guard_out(size_out, "size_out", 0, || {
        Ok(live(model)?.model().config.image_size as u32)
    })
}

/// `dv_status dv_model_patching(dv_model model, uint32_t *patch_size_out, uint32_t
/// *num_patches_out)`: a naflex model's patch size and most patches an image is cut into; 0 and
/// 0 for a model of fixed square size (whose `dv_model_image_size` is then non-zero).
///
/// # Safety
/// Both out-pointers are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn dv_model_patching(
    model: u64,
    patch_size_out: *mut u32,
    num_patches_out: *mut u32,
) -> DvStatus {
    if !num_patches_out.is_null() {
        put(num_patches_out, 0);
    }
    guard_out(patch_size_out, "patch_size_out", 0, || {
        if num_patches_out.is_null() {
            return Err(Fail::null("num_patches_out"));
        }
        let p = live(model)?.model().config.patching();
        let (size, n) = p.map_or((0, 0), |p| (p.patch_size as u32, p.num_patches as u32));
        put(num_patches_out, n);
        Ok(size)
    })
}
