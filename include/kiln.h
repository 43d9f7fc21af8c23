/* kiln — deep learning in C on whatever accelerator a machine has. */
#ifndef KILN_H
#define KILN_H

#include "kiln/core.h"
#include "kiln/device.h"
#include "kiln/tensor.h"
#include "kiln/random.h"
#include "kiln/ops.h"
#include "kiln/autograd.h"
#include "kiln/nn.h"
#include "kiln/optim.h"
#include "kiln/io.h"
#include "kiln/checkpoint.h"
#include "kiln/graph.h"
#include "kiln/vision.h"
#include "kiln/fft.h"
#include "kiln/dist.h"

#endif
