/* The Vulkan loader, opened at run time: libkiln links nothing of Vulkan, so
 * a machine without the loader or a driver runs with zero Vulkan devices. */
#include "vk_internal.h"

#include <dlfcn.h>
#include <stdlib.h>

kvk_fns kvk;

bool kvk_load_loader(void) {
    static const char *const names[] = {"libvulkan.so.1", "libvulkan.so", "libvulkan.1.dylib", "libMoltenVK.dylib"};
    const char *env = getenv("KILN_VULKAN_LOADER"); /* another loader, for tests and odd installs */
    void *h = NULL;
    if (env && *env) h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    for (size_t i = 0; !h && i < sizeof names / sizeof *names; i++) h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) return false;
    /* The one symbol a loader must export; everything else comes through it. */
    void *sym = dlsym(h, "vkGetInstanceProcAddr");
    if (!sym) return false;
    /* POSIX guarantees object and function pointers convert (dlsym's contract). */
    *(void **)&kvk.vkGetInstanceProcAddr = sym;
    kvk.vkCreateInstance = (PFN_vkCreateInstance)kvk.vkGetInstanceProcAddr(NULL, "vkCreateInstance");
    kvk.vkEnumerateInstanceExtensionProperties = (PFN_vkEnumerateInstanceExtensionProperties)kvk.vkGetInstanceProcAddr(
        NULL, "vkEnumerateInstanceExtensionProperties");
    kvk.vkEnumerateInstanceVersion =
        (PFN_vkEnumerateInstanceVersion)kvk.vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    return kvk.vkCreateInstance && kvk.vkEnumerateInstanceExtensionProperties;
}

bool kvk_load_instance(VkInstance inst) {
    bool ok = true;
#define LOAD(f) ok = (kvk.f = (PFN_##f)kvk.vkGetInstanceProcAddr(inst, #f)) != NULL && ok;
    KVK_INSTANCE_FNS(LOAD)
    /* Device functions through the instance: the loader's trampolines
     * dispatch to each device's driver, so one table serves every device. */
    KVK_DEVICE_FNS(LOAD)
#undef LOAD
    return ok;
}
