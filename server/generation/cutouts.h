// The cutouts of VQGAN+CLIP generation (DESIGN.md §5): the reference's classic `MakeCutouts` (random square
// crops resampled to CLIP's input size) followed by its kornia augmentations (RandomAffine, RandomPerspective,
// ColorJitter, RandomErasing, in that order, each with probability p per cutout) and additive noise.
//
// Written with ATen ops only, so it runs on whatever device the image is on, and differentiable w.r.t. the
// image: gradients flow back through the crops, resampling, grid sampling, colour jitter and erasing (zero
// inside erased rectangles). All randomness comes from the generator passed in; the global RNG is never used,
// so a job's cutouts depend only on its own generator and image. Thread-safe as long as no two threads use the
// same generator at once.
#pragma once

#include <array>

#include <ATen/ATen.h>

#include "absl/status/status.h"

namespace clipserve::generation {

// Defaults are the reference's (nerdyrodent VQGAN-CLIP), except the hue range (0: the shapes world names
// colours, and hue jitter would change them).
struct CutoutOptions {
  int cutn = 32;
  // Side of the square cutouts (CLIP's input size).
  int cut_size = 224;
  // Crop side = rand^cut_pow · (max − min) + min; larger values favour small crops.
  float cut_pow = 1.0f;
  // Whether the four augmentations run; the noise below is separate (noise_max 0 switches it off).
  bool augment = true;
  // Probability of each augmentation, drawn independently per cutout and augmentation.
  float augment_probability = 0.7f;
  // Each cutout gets noise_fac · randn with noise_fac ~ U(noise_min, noise_max) drawn per cutout. The reference
  // has noise_min 0; a floor above 0 makes every cutout a noisy copy, so that the mean gradient over the cutouts
  // is that of the CLIP smoothed by Gaussian noise (Cohen et al. 2019's randomized smoothing).
  float noise_min = 0.0f;
  float noise_max = 0.1f;
  // ColorJitter: brightness, contrast and saturation factors ~ U(1 − x, 1 + x) (torchvision semantics);
  // the hue shift ~ U(−hue, hue) turns of the chroma plane.
  float brightness = 0.1f;
  float contrast = 0.1f;
  float saturation = 0.1f;
  float hue = 0.0f;
  // RandomAffine about the centre: rotation ~ U(±rotation_degrees), translation ~ U(±translate) of the side
  // in x and y, x-shear ~ U(±shear_degrees); border padding.
  float rotation_degrees = 15.0f;
  float translate = 0.1f;
  float shear_degrees = 5.0f;
  // RandomAffine's scale ~ U(affine_scale_min, 1) (1, the default and the reference's: no scaling). Below 1 the
  // picture shrinks inside the cutout and the border padding carries its edge pixels outwards, so that an object
  // touching the picture's frame shows as a band running off the cutout.
  float affine_scale_min = 1.0f;
  // RandomPerspective: each corner moves inwards by U(0, distortion · side/2) in x and y.
  float perspective_distortion = 0.7f;
  // What the perspective shows outside the picture: false, black (zero padding, the reference's); true, the
  // picture's edge pixels carried outwards (border padding), so that the picture's own frame does not become
  // an outline in the cutout.
  bool perspective_border_padding = false;
  // RandomErasing: a rectangle with area ~ U(erase_area_min, erase_area_max) of the cutout and aspect ratio
  // (height/width) log-uniform in [erase_aspect_min, erase_aspect_max] is set to erase_value.
  float erase_area_min = 0.02f;
  float erase_area_max = 0.33f;
  float erase_aspect_min = 0.3f;
  float erase_aspect_max = 3.3f;
  float erase_value = 0.0f;
  // Gaussian blur (not in the reference; 0, the default, switches it off): sigma ~ U(0, blur_sigma_max) pixels
  // of the cutout, separable, reflect padding, applied after the erasing with probability augment_probability.
  // Through a blurred cutout the CLIP's gradient only shapes the picture's coarse structure.
  float blur_sigma_max = 0.0f;
};

// INVALID_ARGUMENT naming the field and its allowed range: cutn in [1, 4096], cut_size in [1, 4096], cut_pow
// in [0, 100], augment_probability in [0, 1], noise_max in [0, 1], noise_min in [0, noise_max],
// brightness/contrast/saturation in [0, 1], hue in [0, 0.5], rotation_degrees in [0, 180], translate in [0, 1],
// shear_degrees in [0, 45], affine_scale_min in [0.1, 1], perspective_distortion in [0, 1],
// 0 < erase_area_min <= erase_area_max <= 1,
// 0 < erase_aspect_min <= erase_aspect_max <= 100, erase_value in [0, 1], blur_sigma_max in [0, 64]. NaN is
// never allowed.
absl::Status ValidateCutoutOptions(const CutoutOptions& options);

// image: [B, 3, H, W] with values in [0, 1], any device and floating dtype (on the CPU, half and bfloat16 are
// processed in float32: libtorch 1.13 lacks their pooling and grid-sampling kernels there). Returns
// [B·cutn, 3, S, S] (S = cut_size) in the image's dtype and on its device, image-major: rows
// [b·cutn, (b+1)·cutn) are image b's cutouts, each with its own crop and augmentations.
//
// Randomness: drawn on `generator`'s device — first one [B·cutn, 28] uniform draw (float64) for every crop and
// augmentation parameter, also those of augmentations that end up skipped, then, when noise_max > 0, the
// [B·cutn, 3, S, S] float32 noise, then, when blur_sigma_max > 0 and `augment`, a [B·cutn, 2] uniform draw for
// the blur, then, when affine_scale_min < 1 and `augment`, a [B·cutn] uniform draw for the affine scale. So the
// generator advances by the same amount whatever the probabilities (and whatever noise_min), and without the
// blur and the scale by the same amount as before they existed. A CPU generator works with a CUDA image (the
// noise is then drawn on the CPU and copied over); a CUDA generator costs one device synchronisation per call
// (the parameters are needed on the host).
// Assumes validated options; throws c10::Error on torch failures (callers convert).
at::Tensor MakeCutouts(const at::Tensor& image, const CutoutOptions& options, at::Generator& generator);

// What generation shows a CLIP, for the tools that train and evaluate one: each picture of `normalized`
// ([B, 3, S, S], CLIP-normalised with `mean` and `std`) goes through one full-size cutout of MakeCutouts
// (options' cutn and cut_size are replaced by 1 and S, so the crop is the whole picture and only the
// augmentations and noise act) and is normalised again. [B, 3, S, S], same dtype and device.
at::Tensor AugmentLikeCutouts(const at::Tensor& normalized, const std::array<float, 3>& mean,
                              const std::array<float, 3>& std, CutoutOptions options, at::Generator& generator);

}  // namespace clipserve::generation
