//! `export_plugin!`: the descriptor and the entry symbol of a plugin.

/// Exports a plugin:
/// `export_plugin!(name: "mine", version: "0.1.0", losses: [MyLoss], encoders: [MyNet], augmentations: [MyAug]);`
/// (each list optional) generates the descriptor and the `vkgrad_plugin_entry_v1` symbol.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:literal, version: $version:literal
        $(, losses: [$($loss:ty),* $(,)?])?
        $(, encoders: [$($enc:ty),* $(,)?])?
        $(, augmentations: [$($aug:ty),* $(,)?])? $(,)?) => {
        unsafe extern "C" fn __vkgrad_plugin_init(
            _host: *const $crate::abi::HostApi,
            registrar: *const $crate::abi::Registrar,
            err: *mut $crate::abi::TextSink,
        ) -> i32 {
            let body = || {
                let reg = unsafe { registrar.as_ref() }.ok_or("no registrar")?;
                if reg.struct_size < ::std::mem::size_of::<$crate::abi::Registrar>() {
                    return Err("the host's registrar is older than this SDK".to_string());
                }
                let vtables: Vec<&'static $crate::abi::ComponentVTable> = vec![
                    $($($crate::trampolines::loss_vtable::<$loss>($name),)*)?
                    $($($crate::trampolines::encoder_vtable::<$enc>($name),)*)?
                    $($($crate::trampolines::augmentation_vtable::<$aug>($name),)*)?
                ];
                for vt in vtables {
                    if unsafe { (reg.register)(reg.ctx, vt) } != $crate::abi::OK {
                        let name = unsafe { vt.name.as_str() }.unwrap_or("?");
                        return Err(format!("the host refused component {name}"));
                    }
                }
                Ok(())
            };
            unsafe { $crate::guard(err, body) }
        }

        static __VKGRAD_PLUGIN_DESCRIPTOR: $crate::abi::PluginDescriptor = $crate::abi::PluginDescriptor {
            struct_size: ::std::mem::size_of::<$crate::abi::PluginDescriptor>(),
            abi_major: $crate::abi::ABI_MAJOR,
            abi_minor: $crate::abi::ABI_MINOR,
            name: $crate::abi::Str { ptr: $name.as_ptr(), len: $name.len() },
            version: $crate::abi::Str { ptr: $version.as_ptr(), len: $version.len() },
            init: __vkgrad_plugin_init,
        };

        /// The plugin's entry point (ABI major version 1).
        #[no_mangle]
        pub extern "C" fn vkgrad_plugin_entry_v1() -> *const $crate::abi::PluginDescriptor {
            &__VKGRAD_PLUGIN_DESCRIPTOR
        }
    };
}
