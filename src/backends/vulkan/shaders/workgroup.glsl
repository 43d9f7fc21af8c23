// The sum of v over the workgroup, returned to every invocation. Called in
// uniform control flow. The subgroup variant adds within each subgroup
// (subgroupAdd; the driver sets the subgroup size: 8 on lavapipe, 32 on
// NVIDIA) and then the subgroups' partials; the other a tree in shared
// memory, one partial per invocation.
shared real wg_part[gl_WorkGroupSize.x];

real wg_sum(real v) {
#if KVK_SUBGROUP
    real s = subgroupAdd(v);
    if (subgroupElect()) wg_part[gl_SubgroupID] = s;
    barrier();
    real r = real(0);
    for (uint i = 0u; i < gl_NumSubgroups; i++) r += wg_part[i];
    barrier();
    return r;
#else
    uint lid = gl_LocalInvocationID.x;
    wg_part[lid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1) {
        if (lid < s) wg_part[lid] += wg_part[lid + s];
        barrier();
    }
    real r = wg_part[0];
    barrier();
    return r;
#endif
}
