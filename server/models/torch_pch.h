// Precompiled header for every target that includes torch (see CMakeLists.txt). Only headers that are heavy
// and stable belong here.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/normalization.h>
#include <torch/autograd.h>
