// The CPU shim's launcher of every kernel, stamped out of the kernel list (lmsi_kernels.h): each
// runs its kernel over the launch's grid with the given parameters and host buffers (sim.h).
#include "sim.h"

#define LMSI_SIM_DEFINE_LAUNCHER(name, params, args)                                  \
    extern "C" int lmsi_sim_##name(const LmsiSimLaunch* launch, LMSI_EXPAND params) { \
        LMSI_SIM_RUN(name, LMSI_EXPAND args);                                         \
    }
LMSI_KERNELS(LMSI_SIM_DEFINE_LAUNCHER)
