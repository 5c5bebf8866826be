//! keyward's own declarations of the Envoy dynamic-module ABI it uses (Envoy 1.40, ABI
//! v0.2.0; learnt from Envoy's `source/extensions/dynamic_modules/abi/abi.h`, written here).
//!
//! The callbacks are not linked: they are looked up in the Envoy process once, at
//! [`Api::resolve`] (`envoy_dynamic_module_on_program_init`). A callback this module needs that
//! the host does not export means another ABI than the one it was built for, and the module
//! refuses to load, naming the missing callback, instead of failing on a request later. It also
//! keeps the crate's test binaries free of unresolved symbols.

use std::ffi::{CStr, c_char, c_void};

/// The ABI version this module was written against, returned to Envoy at load.
pub const ABI_VERSION: &CStr = c"v0.2.0";

/// A buffer owned by Envoy (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl EnvoyBuffer {
    pub const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// The bytes, valid until the end of the current event hook.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes for the lifetime chosen.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A buffer owned by the module (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The null buffer: "remove" for a header value, "none" for optional arguments.
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// A header owned by the module (`envoy_dynamic_module_type_module_http_header`).
#[repr(C)]
pub struct ModuleHeader {
    pub key_ptr: *const u8,
    pub key_len: usize,
    pub value_ptr: *const u8,
    pub value_len: usize,
}

impl ModuleHeader {
    pub fn of(key: &str, value: &[u8]) -> Self {
        ModuleHeader {
            key_ptr: key.as_ptr(),
            key_len: key.len(),
            value_ptr: value.as_ptr(),
            value_len: value.len(),
        }
    }
}

/// A header owned by Envoy (`envoy_dynamic_module_type_envoy_http_header`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const u8,
    pub key_len: usize,
    pub value_ptr: *const u8,
    pub value_len: usize,
}

impl EnvoyHeader {
    pub const EMPTY: EnvoyHeader = EnvoyHeader {
        key_ptr: std::ptr::null(),
        key_len: 0,
        value_ptr: std::ptr::null(),
        value_len: 0,
    };

    /// Name and value.
    ///
    /// # Safety
    /// Envoy filled it in this event hook, and the module has not changed that header map
    /// since: the pointers are into it.
    pub unsafe fn parts<'a>(&self) -> (&'a [u8], &'a [u8]) {
        unsafe {
            (
                EnvoyBuffer {
                    ptr: self.key_ptr,
                    len: self.key_len,
                }
                .bytes(),
                EnvoyBuffer {
                    ptr: self.value_ptr,
                    len: self.value_len,
                }
                .bytes(),
            )
        }
    }
}

/// The `len` items at `ptr` (none when `ptr` is null), as Envoy hands arrays to an event hook.
///
/// # Safety
/// A non-null `ptr` points to `len` initialized items, valid for the lifetime chosen (Envoy's:
/// until the hook returns).
pub unsafe fn slice_of<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    match ptr.is_null() {
        true => &[],
        false => unsafe { std::slice::from_raw_parts(ptr, len) },
    }
}

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
pub const REQUEST_HEADERS: u32 = 0;
/// `envoy_dynamic_module_type_http_header_type_ResponseHeader`.
pub const RESPONSE_HEADERS: u32 = 2;
/// `envoy_dynamic_module_type_metadata_source_Route`.
pub const METADATA_ROUTE: u32 = 1;
/// `envoy_dynamic_module_type_attribute_id_SourceAddress` (`source.address`).
pub const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
pub const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
pub const CALLOUT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_on_http_filter_request_headers_status_Continue` /
/// `_StopIteration`.
pub const HEADERS_CONTINUE: u32 = 0;
pub const HEADERS_STOP: u32 = 1;
/// `..._request_headers_status_StopAllIterationAndWatermark`: nothing of the request goes on
/// (body included, buffered up to the stream's limit) until `continue_decoding`.
pub const HEADERS_STOP_ALL_WATERMARK: u32 = 4;
/// `envoy_dynamic_module_type_log_level_Warn` / `_Error`.
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;

pub type FilterPtr = *mut c_void;
pub type ConfigEnvoyPtr = *mut c_void;
pub type SchedulerPtr = *mut c_void;

/// The callbacks this module calls, resolved from the Envoy process.
pub struct Api {
    pub log: unsafe extern "C" fn(u32, ModuleBuffer),
    pub get_headers_size: unsafe extern "C" fn(FilterPtr, u32) -> usize,
    pub get_headers: unsafe extern "C" fn(FilterPtr, u32, *mut EnvoyHeader) -> bool,
    pub set_header: unsafe extern "C" fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool,
    pub send_response:
        unsafe extern "C" fn(FilterPtr, u32, *mut ModuleHeader, usize, ModuleBuffer, ModuleBuffer),
    pub add_header: unsafe extern "C" fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer) -> bool,
    pub set_metadata_bool: unsafe extern "C" fn(FilterPtr, ModuleBuffer, ModuleBuffer, bool),
    pub set_metadata_string:
        unsafe extern "C" fn(FilterPtr, ModuleBuffer, ModuleBuffer, ModuleBuffer),
    pub set_metadata_number: unsafe extern "C" fn(FilterPtr, ModuleBuffer, ModuleBuffer, f64),
    pub http_callout: unsafe extern "C" fn(
        FilterPtr,
        *mut u64,
        ModuleBuffer,
        *mut ModuleHeader,
        usize,
        ModuleBuffer,
        u64,
    ) -> u32,
    pub continue_decoding: unsafe extern "C" fn(FilterPtr),
    pub get_metadata_string:
        unsafe extern "C" fn(FilterPtr, u32, ModuleBuffer, ModuleBuffer, *mut EnvoyBuffer) -> bool,
    pub get_attribute_string: unsafe extern "C" fn(FilterPtr, u32, *mut EnvoyBuffer) -> bool,
    pub config_http_callout: unsafe extern "C" fn(
        ConfigEnvoyPtr,
        *mut u64,
        ModuleBuffer,
        *mut ModuleHeader,
        usize,
        ModuleBuffer,
        u64,
    ) -> u32,
    pub config_scheduler_new: unsafe extern "C" fn(ConfigEnvoyPtr) -> SchedulerPtr,
    pub config_scheduler_commit: unsafe extern "C" fn(SchedulerPtr, u64),
    pub config_scheduler_delete: unsafe extern "C" fn(SchedulerPtr),
}

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// glibc's `RTLD_DEFAULT`: search the process's global symbols (Envoy's exports).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

impl Api {
    /// Every callback this module calls, from the host process; the name of the first one it
    /// does not export otherwise.
    pub fn resolve() -> Result<Api, &'static str> {
        Api::resolve_with(|name| unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) })
    }

    /// [`Api::resolve`] with another symbol lookup.
    // Each field's type is the ABI's signature for the name beside it: the transmute's target
    // is the field's type, spelled once, in the struct.
    #[allow(clippy::missing_transmute_annotations)]
    pub fn resolve_with(lookup: impl Fn(&CStr) -> *mut c_void) -> Result<Api, &'static str> {
        macro_rules! find {
            ($name:literal) => {{
                let name: &'static CStr = $name;
                let found = lookup(name);
                if found.is_null() {
                    return Err(name.to_str().unwrap_or("?"));
                }
                // SAFETY: a function pointer and a data pointer have the same size on every
                // platform Envoy runs on; the signature is the ABI's for this name.
                unsafe { std::mem::transmute::<*mut c_void, _>(found) }
            }};
        }
        Ok(Api {
            log: find!(c"envoy_dynamic_module_callback_log"),
            get_headers_size: find!(c"envoy_dynamic_module_callback_http_get_headers_size"),
            get_headers: find!(c"envoy_dynamic_module_callback_http_get_headers"),
            set_header: find!(c"envoy_dynamic_module_callback_http_set_header"),
            send_response: find!(c"envoy_dynamic_module_callback_http_send_response"),
            add_header: find!(c"envoy_dynamic_module_callback_http_add_header"),
            set_metadata_bool: find!(
                c"envoy_dynamic_module_callback_http_set_dynamic_metadata_bool"
            ),
            set_metadata_string: find!(
                c"envoy_dynamic_module_callback_http_set_dynamic_metadata_string"
            ),
            set_metadata_number: find!(
                c"envoy_dynamic_module_callback_http_set_dynamic_metadata_number"
            ),
            http_callout: find!(c"envoy_dynamic_module_callback_http_filter_http_callout"),
            continue_decoding: find!(
                c"envoy_dynamic_module_callback_http_filter_continue_decoding"
            ),
            get_metadata_string: find!(c"envoy_dynamic_module_callback_http_get_metadata_string"),
            get_attribute_string: find!(
                c"envoy_dynamic_module_callback_http_filter_get_attribute_string"
            ),
            config_http_callout: find!(
                c"envoy_dynamic_module_callback_http_filter_config_http_callout"
            ),
            config_scheduler_new: find!(
                c"envoy_dynamic_module_callback_http_filter_config_scheduler_new"
            ),
            config_scheduler_commit: find!(
                c"envoy_dynamic_module_callback_http_filter_config_scheduler_commit"
            ),
            config_scheduler_delete: find!(
                c"envoy_dynamic_module_callback_http_filter_config_scheduler_delete"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host lacking one callback (another ABI) is refused, naming it; a host with all of them
    /// is not.
    #[test]
    fn a_host_missing_a_callback_is_refused_by_name() {
        static SOMETHING: u8 = 0;
        let present = |_: &CStr| &SOMETHING as *const u8 as *mut c_void;
        assert!(Api::resolve_with(present).is_ok());
        let without_callout = |name: &CStr| match name.to_bytes() {
            b"envoy_dynamic_module_callback_http_filter_config_http_callout" => {
                std::ptr::null_mut()
            }
            _ => &SOMETHING as *const u8 as *mut c_void,
        };
        assert_eq!(
            Api::resolve_with(without_callout).err(),
            Some("envoy_dynamic_module_callback_http_filter_config_http_callout")
        );
    }
}
