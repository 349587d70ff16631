//! The registry behind every object the C ABI hands out.
//!
//! Models and outputs are plain `u64` ids, never pointers: an id is looked up here on every
//! call, so an id that was never issued, was already freed, or names the other kind of
//! object is reported as invalid instead of being dereferenced. Ids are never reused.
//! Strings are real `char *` (callers expect to read them directly); their addresses are
//! recorded so `dv_string_free` refuses anything it did not hand out, or hands back twice.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::loader::ClipVision;

/// One output tensor, contiguous (C order), with its name and shape ready for C.
pub struct Tensor {
    pub name: String,
    pub c_name: CString,
    pub data: TensorData,
    pub shape: Vec<i64>,
}

/// A tensor's elements: f32 outputs, or a naflex model's `spatial_shapes` (int64).
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

pub struct OutputSet {
    pub tensors: Vec<Tensor>,
}

enum Object {
    Model(Arc<ClipVision>),
    Outputs(Arc<OutputSet>),
    /// A model id whose model `dv_shutdown` released: kept so calls on it can say so.
    ReleasedModel,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static OBJECTS: Mutex<BTreeMap<u64, Object>> = Mutex::new(BTreeMap::new());
static STRINGS: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn insert(obj: Object) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&OBJECTS).insert(id, obj);
    id
}

pub fn insert_model(cv: ClipVision) -> u64 {
    insert(Object::Model(Arc::new(cv)))
}

pub fn insert_outputs(o: OutputSet) -> u64 {
    insert(Object::Outputs(Arc::new(o)))
}

/// The model behind `id`; the registry lock is released before the caller uses it, so
/// other threads can encode or unload meanwhile (an unload frees it once the last user ends).
pub fn model(id: u64) -> Option<Arc<ClipVision>> {
    match lock(&OBJECTS).get(&id) {
        Some(Object::Model(m)) => Some(m.clone()),
        _ => None,
    }
}

pub fn outputs(id: u64) -> Option<Arc<OutputSet>> {
    match lock(&OBJECTS).get(&id) {
        Some(Object::Outputs(o)) => Some(o.clone()),
        _ => None,
    }
}

/// True when `id` named a model that `dv_shutdown` released.
pub fn released_by_shutdown(id: u64) -> bool {
    matches!(lock(&OBJECTS).get(&id), Some(Object::ReleasedModel))
}

/// Releases every live model (`dv_shutdown`): their ids stay known as released, so a later
/// call on one gets a clear error. Outputs are plain memory and stay valid until freed.
pub fn release_models() {
    let released: Vec<Object> = {
        let mut objects = lock(&OBJECTS);
        objects
            .values_mut()
            .filter(|o| matches!(o, Object::Model(_)))
            .map(|o| std::mem::replace(o, Object::ReleasedModel))
            .collect()
    };
    // Dropped here, outside the lock (releasing sessions takes a while).
    drop(released);
}

/// Removes a model; false when `id` is not a live model.
pub fn remove_model(id: u64) -> bool {
    let removed = {
        let mut objects = lock(&OBJECTS);
        match objects.get(&id) {
            Some(Object::Model(_)) => objects.remove(&id),
            _ => None,
        }
    };
    // Dropped here, outside the lock (releasing sessions takes a while).
    removed.is_some()
}

pub fn remove_outputs(id: u64) -> bool {
    let removed = {
        let mut objects = lock(&OBJECTS);
        match objects.get(&id) {
            Some(Object::Outputs(_)) => objects.remove(&id),
            _ => None,
        }
    };
    removed.is_some()
}

/// Hands a string to C, recording its address.
pub fn string_into_raw(s: String) -> *mut c_char {
    // Interior NULs cannot occur in JSON we produce; replace them defensively.
    let c = CString::new(s.replace('\0', " ")).unwrap_or_default();
    let p = c.into_raw();
    lock(&STRINGS).insert(p as usize);
    p
}

/// Frees a string this library handed out; false when `p` is not one (or was freed).
/// Takes the address only, so any value is safe to pass.
pub fn string_free(addr: usize) -> bool {
    if !lock(&STRINGS).remove(&addr) {
        return false;
    }
    let p = addr as *mut c_char;
    // SAFETY: `p` came from `CString::into_raw` in `string_into_raw` and was still recorded,
    // so it has not been freed; removing it from the set first makes this the only free.
    drop(unsafe { CString::from_raw(p) });
    true
}

/// Live objects (models, outputs, strings), for leak tests.
pub fn live_counts() -> (usize, usize, usize) {
    let objects = lock(&OBJECTS);
    let count = |f: fn(&Object) -> bool| objects.values().filter(|o| f(o)).count();
    let models = count(|o| matches!(o, Object::Model(_)));
    let outputs = count(|o| matches!(o, Object::Outputs(_)));
    (models, outputs, lock(&STRINGS).len())
}
