#include "client/generation_commands.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/generation_client.h"
#include "client/images.h"
#include "client/interrupt.h"
#include "client/output.h"
#include "nlohmann/json.hpp"
#include "server/common/file_util.h"
#include "server/common/status_macros.h"

namespace clipserve::client {
namespace {

namespace fs = std::filesystem;

// A float as the shortest decimal that reads back as it (0.291f prints as 0.291, not 0.29100000858306885).
double ShortestDouble(float value) {
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), value);
  if (r.ec != std::errc()) return value;
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

std::string JobIdOf(const v1::GenerateResponse& event) {
  switch (event.event_case()) {
    case v1::GenerateResponse::kAccepted:
      return event.accepted().job_id();
    case v1::GenerateResponse::kProgress:
      return event.progress().job_id();
    case v1::GenerateResponse::kCompleted:
      return event.completed().job_id();
    case v1::GenerateResponse::EVENT_NOT_SET:
      break;
  }
  return "";
}

// The live progress line on stderr: rewritten in place on a terminal. Elsewhere (a log, a pipe) one line per
// update would flood the log, so a line is written when the progress reaches the next tenth of the steps (every
// update when the total is unknown), the last step's line only once the job has completed, and a line equal to
// the last one is not repeated.
class LiveLine {
 public:
  LiveLine(std::ostream& err, bool terminal) : err_(err), terminal_(terminal) {}
  ~LiveLine() { End(); }

  // `step` of `total` (0: unknown) tells a log which updates to keep.
  void Update(const std::string& line, int64_t step = 0, int64_t total = 0) {
    if (terminal_) {
      err_ << "\r" << line << "\033[K" << std::flush;
      open_ = true;
      return;
    }
    if (total > 0) {
      if (step >= total) return;  // the final line comes with `completed`
      const int64_t tenth = step * 10 / total;
      if (tenth == last_tenth_) return;
      last_tenth_ = tenth;
    }
    if (line == last_line_) return;
    err_ << line << "\n";
    last_line_ = line;
  }
  // A line that stays: ends the live one first.
  void Print(const std::string& line) {
    End();
    err_ << line << "\n";
  }
  // Moves past the live line, if one is showing.
  void End() {
    if (!open_) return;
    err_ << "\n" << std::flush;
    open_ = false;
  }

 private:
  std::ostream& err_;
  const bool terminal_;
  bool open_ = false;
  int64_t last_tenth_ = -1;
  std::string last_line_;
};

// Follows one Generate or WatchGeneration stream for clipctl: shows the progress (unless --json), writes the
// frames and the final image into `out_dir` (when given) and prints the result.
class Follower {
 public:
  Follower(Context& ctx, std::string out_dir)
      : ctx_(ctx), out_dir_(std::move(out_dir)), line_(ctx.err(), ctx.err_is_terminal()) {}

  // Creates the output directory.
  absl::Status Prepare() {
    if (out_dir_.empty()) return absl::OkStatus();
    std::error_code ec;
    fs::create_directories(out_dir_, ec);
    if (ec || !fs::is_directory(out_dir_)) {
      return absl::FailedPreconditionError(absl::StrCat("cannot create the --out directory '", out_dir_,
                                                        "': ", ec ? ec.message() : "a file is in the way"));
    }
    return absl::OkStatus();
  }

  absl::Status OnEvent(const v1::GenerateResponse& event) {
    if (job_id_.empty()) job_id_ = JobIdOf(event);
    switch (event.event_case()) {
      case v1::GenerateResponse::kAccepted:
        OnAccepted(event.accepted());
        return absl::OkStatus();
      case v1::GenerateResponse::kProgress:
        return OnProgress(event.progress());
      case v1::GenerateResponse::kCompleted:
        return OnCompleted(event.completed());
      case v1::GenerateResponse::EVENT_NOT_SET:  // an event this client does not know
        break;
    }
    return absl::OkStatus();
  }

  // Starts a stream with `start`, follows it to its end and prints the result. Ctrl-C cancels the call (exit
  // 130, with `interrupted_note` saying what that means for the job); the handler is in place before the call
  // starts.
  absl::StatusOr<int> Run(const std::function<std::unique_ptr<GenerationStream>()>& start,
                          const std::string& interrupted_note) {
    absl::Mutex mu;
    GenerationStream* live = nullptr;
    // Without a watcher (another one is active), Ctrl-C ends the process, which closes the stream too.
    absl::StatusOr<std::unique_ptr<InterruptWatcher>> watcher = InterruptWatcher::Create([&mu, &live] {
      absl::MutexLock lock(&mu);
      if (live != nullptr) live->Cancel();
    });
    std::unique_ptr<GenerationStream> stream = start();
    {
      absl::MutexLock lock(&mu);
      live = stream.get();
      if (watcher.ok() && (*watcher)->interrupted()) stream->Cancel();
    }
    absl::StatusOr<v1::GenerationCompleted> done =
        stream->Wait([this](const v1::GenerateResponse& event) { return OnEvent(event); });
    const bool interrupted = watcher.ok() && (*watcher)->interrupted();
    if (watcher.ok()) watcher->reset();  // joins its thread: `live` is no longer used
    line_.End();
    if (!done.ok()) {
      if (!interrupted) return done.status();
      std::string message = "interrupted";
      if (!job_id_.empty()) absl::StrAppend(&message, ": job ", job_id_, " ", interrupted_note);
      if (ctx_.json()) {
        ctx_.out() << ErrorJson(absl::CancelledError(message)) << "\n";
      } else {
        ctx_.err() << "clipctl: " << message << "\n";
      }
      return kInterruptedExitCode;
    }
    PrintResult(*done);
    return 0;
  }

 private:
  void OnAccepted(const v1::GenerationAccepted& a) {
    if (a.total_steps() > 0) total_steps_ = a.total_steps();
    if (a.seed() != 0) seed_ = a.seed();
    if (ctx_.json()) return;
    if (!announced_) {
      announced_ = true;
      std::string note = absl::StrCat("job ", job_id_);
      if (total_steps_ > 0) absl::StrAppend(&note, ": ", total_steps_, " steps");
      if (seed_ != 0) absl::StrAppend(&note, total_steps_ > 0 ? ", " : ": ", "seed ", seed_);
      line_.Print(note);
    }
    line_.Update(a.queue_position() > 0 ? FormatQueuedLine(a) : absl::StrCat("running (job ", job_id_, ")"));
  }

  absl::Status OnProgress(const v1::GenerationProgress& p) {
    if (p.total_steps() > 0) total_steps_ = p.total_steps();
    if (p.has_frame() && !p.frame().data().empty()) {
      ++frames_;
      if (!out_dir_.empty()) {
        CLIPSERVE_RETURN_IF_ERROR(
            WriteFileAtomically(fs::path(out_dir_) / FrameFileName(p.step(), p.frame()), p.frame().data()));
      }
    }
    if (!ctx_.json()) line_.Update(FormatProgressLine(p, total_steps_), p.step(), total_steps_);
    return absl::OkStatus();
  }

  absl::Status OnCompleted(const v1::GenerationCompleted& c) {
    if (c.seed() != 0) seed_ = c.seed();
    if (!out_dir_.empty() && !c.image().data().empty()) {
      const fs::path path = fs::path(out_dir_) / absl::StrCat("final.", FrameExtension(c.image()));
      CLIPSERVE_RETURN_IF_ERROR(WriteFileAtomically(path, c.image().data()));
      final_path_ = path.string();
    }
    if (!ctx_.json()) {
      v1::GenerationProgress last;
      last.set_step(c.steps());
      last.set_loss(c.loss());
      last.set_similarity(c.similarity());
      last.set_elapsed_seconds(c.elapsed_seconds());
      line_.Update(FormatProgressLine(last, std::max(total_steps_, c.steps())));
    }
    return absl::OkStatus();
  }

  void PrintResult(const v1::GenerationCompleted& done) {
    const std::string job_id = done.job_id().empty() ? job_id_ : done.job_id();
    if (ctx_.json()) {
      nlohmann::ordered_json j;
      j["job_id"] = job_id;
      j["seed"] = seed_;
      j["steps"] = done.steps();
      j["frames"] = frames_;
      j["final"] = final_path_.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(final_path_);
      j["similarity"] = ShortestDouble(done.similarity());
      j["loss"] = ShortestDouble(done.loss());
      j["elapsed_seconds"] = done.elapsed_seconds();
      ctx_.out() << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    std::string out = absl::StrFormat("job %s completed: %d steps in %.1f s, seed %d\n", job_id, done.steps(),
                                      done.elapsed_seconds(), seed_);
    absl::StrAppend(&out, absl::StrFormat("similarity %.4f, loss %.4f\n", done.similarity(), done.loss()));
    const v1::Frame& image = done.image();
    std::string final_image = absl::StrCat("final image ", image.width(), "x", image.height());
    if (!final_path_.empty()) {
      absl::StrAppend(&out, final_image, ": ", final_path_);
      if (frames_ > 0) absl::StrAppend(&out, "; ", frames_, frames_ == 1 ? " frame" : " frames", " in ", out_dir_);
      absl::StrAppend(&out, "\n");
    } else {
      absl::StrAppend(&out, final_image, " (", frames_, frames_ == 1 ? " frame" : " frames",
                      "; not saved: --out=DIR keeps them)\n");
    }
    ctx_.out() << out;
  }

  Context& ctx_;
  const std::string out_dir_;
  LiveLine line_;
  std::string job_id_;
  uint32_t total_steps_ = 0;
  uint64_t seed_ = 0;
  int64_t frames_ = 0;
  bool announced_ = false;
  std::string final_path_;
};

// The stream's deadline: --timeout only when given (the global default is for unary calls).
StreamOptions StreamOptionsFor(const Args& args, const Context& ctx) {
  StreamOptions options;
  if (args.Has("timeout")) options.timeout = ctx.timeout();
  return options;
}

absl::StatusOr<v1::ImageFormat> ParseFrameFormat(const std::string& value) {
  const std::string v = absl::AsciiStrToLower(value);
  if (v == "png") return v1::IMAGE_FORMAT_PNG;
  if (v == "jpeg" || v == "jpg") return v1::IMAGE_FORMAT_JPEG;
  if (v == "webp") return v1::IMAGE_FORMAT_WEBP;
  return UsageError(absl::StrCat("--frame_format must be png, jpeg or webp, not '", value, "'"));
}

// ---- generate -------------------------------------------------------------------------------------------------

VerbSpec GenerateSpec() {
  return {"generate",
          "--prompt=TEXT [--seed=N] [--steps=N] [--size=WxH] [--frame_every=N]\n"
          "                  [--frame_format=png|jpeg|webp] [--cutn=N] [--lr=X] [--init_image=FILE] [--init_weight=X]\n"
          "                  [--out=DIR] [--detach]",
          "VQGAN+CLIP: generate an image from a text prompt, streaming its progress",
          "Starts a generation job and follows it: a live progress line on stderr (step, loss, CLIP similarity,\n"
          "speed, ETA; the queue position while the job waits), then a summary on stdout. With --out=DIR (created if\n"
          "needed), every streamed frame is written to DIR/frame_NNNN.EXT (NNNN: the step) and the final image to\n"
          "DIR/final.EXT (EXT: png, jpg or webp, from the frame format). --json prints one object at the end:\n"
          "{\"job_id\", \"seed\", \"steps\", \"frames\", \"final\", \"similarity\", \"loss\", \"elapsed_seconds\"} "
          "(\"frames\":\n"
          "frames received; \"final\": the final image's path, null without --out). --detach returns as soon as the\n"
          "server accepts the job and prints its id ({\"job_id\", \"queue_position\"} with --json); the job runs on\n"
          "(`clipctl watch JOB`). Ctrl-C cancels the job and exits 130. The stream has no deadline unless --timeout\n"
          "is given; server-side limits (sizes, steps, cutouts) are checked by the server.",
          {{"prompt", FlagType::kValue, "TEXT", "text prompts \"text[:weight[:stop]]\" separated by \"|\" (required)"},
           {"seed", FlagType::kValue, "N", "makes the run repeatable (default: the server picks one and reports it)"},
           {"steps", FlagType::kValue, "N", "optimisation steps (default: the server's; the shipped config's is 150)"},
           {"size", FlagType::kValue, "WxH", "output size in pixels, e.g. 256x256 (default: the server's)"},
           {"frame_every", FlagType::kValue, "N", "stream a frame every N steps (default 0: the final image only)"},
           {"frame_format", FlagType::kValue, "FORMAT", "png (default), jpeg or webp: frames and the final image"},
           {"frame_size", FlagType::kValue, "WxH", "frame size (default: the output size)"},
           {"frame_quality", FlagType::kValue, "Q", "JPEG and WebP quality, 1..100 (default 90)"},
           {"cutn", FlagType::kValue, "N", "cutouts per step (default: the server's)"},
           {"cut_pow", FlagType::kValue, "X", "cutout size distribution (default: the server's)"},
           {"lr", FlagType::kValue, "X", "Adam's learning rate on the latent (default: the server's)"},
           {"init_image", FlagType::kValue, "FILE", "start from this image instead of random codes"},
           {"init_weight", FlagType::kValue, "X", "pull towards the start image's latent (default 0)"},
           {"out", FlagType::kValue, "DIR", "write the frames and the final image here"},
           {"detach", FlagType::kBool, "", "return once the job is accepted; it keeps running on the server"}}};
}

absl::StatusOr<v1::GenerateRequest> GenerateRequestFromArgs(const Args& args) {
  v1::GenerateRequest req;
  const std::string prompt = args.Get("prompt");
  if (absl::StripAsciiWhitespace(prompt).empty()) return UsageError("give a text prompt: --prompt=TEXT");
  req.set_prompt(prompt);
  if (args.Has("seed")) {
    uint64_t seed = 0;
    if (!absl::SimpleAtoi(args.Get("seed"), &seed)) {
      return UsageError(absl::StrCat("--seed must be a non-negative integer, not '", args.Get("seed"), "'"));
    }
    req.set_seed(seed);
  }
  auto uint_flag = [&args](const char* name, int64_t min, int64_t max, void (v1::GenerateRequest::*set)(uint32_t),
                           v1::GenerateRequest* r) -> absl::Status {
    if (!args.Has(name)) return absl::OkStatus();
    absl::StatusOr<int64_t> v = args.GetInt(name, 0, min, max);
    if (!v.ok()) return UsageError(v.status().message());
    (r->*set)(static_cast<uint32_t>(*v));
    return absl::OkStatus();
  };
  auto float_flag = [&args](const char* name, double min, double max, void (v1::GenerateRequest::*set)(float),
                            v1::GenerateRequest* r) -> absl::Status {
    if (!args.Has(name)) return absl::OkStatus();
    absl::StatusOr<double> v = args.GetDouble(name, 0, min, max);
    if (!v.ok()) return UsageError(v.status().message());
    (r->*set)(static_cast<float>(*v));
    return absl::OkStatus();
  };
  CLIPSERVE_RETURN_IF_ERROR(uint_flag("steps", 1, 1 << 20, &v1::GenerateRequest::set_steps, &req));
  CLIPSERVE_RETURN_IF_ERROR(uint_flag("frame_every", 0, 1 << 20, &v1::GenerateRequest::set_frame_every, &req));
  CLIPSERVE_RETURN_IF_ERROR(uint_flag("frame_quality", 1, 100, &v1::GenerateRequest::set_frame_quality, &req));
  CLIPSERVE_RETURN_IF_ERROR(uint_flag("cutn", 1, 1 << 16, &v1::GenerateRequest::set_cutn, &req));
  CLIPSERVE_RETURN_IF_ERROR(float_flag("cut_pow", 1e-6, 1e3, &v1::GenerateRequest::set_cut_pow, &req));
  CLIPSERVE_RETURN_IF_ERROR(float_flag("lr", 1e-12, 1e6, &v1::GenerateRequest::set_learning_rate, &req));
  CLIPSERVE_RETURN_IF_ERROR(float_flag("init_weight", 0, 1e6, &v1::GenerateRequest::set_init_weight, &req));
  if (args.Has("size")) {
    CLIPSERVE_ASSIGN_OR_RETURN(auto size, ParseSize("size", args.Get("size")));
    req.set_width(size.first);
    req.set_height(size.second);
  }
  if (args.Has("frame_size")) {
    CLIPSERVE_ASSIGN_OR_RETURN(auto size, ParseSize("frame_size", args.Get("frame_size")));
    req.set_frame_width(size.first);
    req.set_frame_height(size.second);
  }
  if (args.Has("frame_format")) {
    CLIPSERVE_ASSIGN_OR_RETURN(v1::ImageFormat format, ParseFrameFormat(args.Get("frame_format")));
    req.set_frame_format(format);
  }
  req.set_detach(args.GetBool("detach"));
  if (req.detach() && args.Has("out")) {
    return UsageError("--out has no use with --detach: `clipctl watch JOB --out=DIR` writes the files");
  }
  // Last: reading the file is not a usage check.
  if (args.Has("init_image")) {
    CLIPSERVE_ASSIGN_OR_RETURN(*req.mutable_init_image(), LoadImage(args.Get("init_image")));
  }
  return req;
}

// --detach: wait for `accepted`, print the job id, close the stream (the server keeps a detached job running).
absl::StatusOr<int> RunDetached(GenerationStream& stream, Context& ctx) {
  v1::GenerateResponse first;
  if (!stream.Read(&first)) {
    CLIPSERVE_RETURN_IF_ERROR(stream.Finish());
    return absl::InternalError("the server ended the generation stream before accepting the job");
  }
  stream.Cancel();
  const std::string job_id = JobIdOf(first);
  const uint32_t position = first.has_accepted() ? first.accepted().queue_position() : 0;
  if (ctx.json()) {
    nlohmann::ordered_json j;
    j["job_id"] = job_id;
    j["queue_position"] = position;
    ctx.out() << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  ctx.out() << job_id << "\n";
  ctx.err() << "job " << job_id << " runs detached"
            << (position > 0 ? absl::StrCat(" (queue position ", position, ")") : std::string()) << "; `clipctl watch "
            << job_id << "` follows it, `clipctl cancel " << job_id << "` stops it\n";
  return 0;
}

absl::StatusOr<int> RunGenerate(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(v1::GenerateRequest req, GenerateRequestFromArgs(args));
  Follower follower(ctx, args.Get("out"));
  CLIPSERVE_RETURN_IF_ERROR(follower.Prepare());
  CLIPSERVE_ASSIGN_OR_RETURN(GenerationClient * client, ctx.generation_client());
  const StreamOptions options = StreamOptionsFor(args, ctx);
  if (req.detach()) return RunDetached(*client->Generate(req, options), ctx);
  return follower.Run([&] { return client->Generate(req, options); }, "cancelled");
}

// ---- watch ----------------------------------------------------------------------------------------------------

VerbSpec WatchSpec() {
  VerbSpec spec{"watch",
                "JOB [--out=DIR]   (or --job=JOB)",
                "follow a generation job again: progress, frames, the final image",
                "Re-attaches to a queued, running or finished job and follows it as `generate` does (progress on\n"
                "stderr, --out files, a summary or, with --json, the same object); the server sends the latest frame\n"
                "first. Watching never cancels the job: Ctrl-C stops watching (exit 130) and the job runs on.",
                {{"job", FlagType::kValue, "JOB", "the job id (or give it as the argument)"},
                 {"out", FlagType::kValue, "DIR", "write the frames and the final image here"}}};
  spec.positional = "job";
  return spec;
}

absl::StatusOr<std::string> JobArg(const Args& args, const std::string& verb) {
  const std::string job = args.Get("job");
  if (job.empty()) return UsageError(absl::StrCat("give the job id: clipctl ", verb, " JOB"));
  return job;
}

absl::StatusOr<int> RunWatch(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::string job, JobArg(args, "watch"));
  Follower follower(ctx, args.Get("out"));
  CLIPSERVE_RETURN_IF_ERROR(follower.Prepare());
  CLIPSERVE_ASSIGN_OR_RETURN(GenerationClient * client, ctx.generation_client());
  const StreamOptions options = StreamOptionsFor(args, ctx);
  return follower.Run([&] { return client->Watch(job, options); }, absl::StrCat("runs on (clipctl watch ", job, ")"));
}

// ---- cancel, generations --------------------------------------------------------------------------------------

VerbSpec CancelSpec() {
  VerbSpec spec{"cancel",
                "JOB   (or --job=JOB)",
                "cancel a generation job",
                "Cancels a queued or running job (its streams end with CANCELLED; a finished job stays as it was) and\n"
                "prints its state and step. --json prints the GenerationInfo.",
                {{"job", FlagType::kValue, "JOB", "the job id (or give it as the argument)"}}};
  spec.positional = "job";
  return spec;
}

absl::StatusOr<int> RunCancel(const Args& args, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(std::string job, JobArg(args, "cancel"));
  CLIPSERVE_ASSIGN_OR_RETURN(GenerationClient * client, ctx.generation_client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::GenerationInfo info, client->Cancel(job));
  if (ctx.json()) {
    ctx.out() << MessageToJson(info) << "\n";
  } else {
    ctx.out() << absl::StrFormat("job %s: %s at step %d/%d\n", info.job_id().empty() ? job : info.job_id(),
                                 GenerationStateName(info.state()), info.step(), info.total_steps());
  }
  return 0;
}

VerbSpec GenerationsSpec() {
  return {"generations",
          "",
          "generation jobs: queued, running and recently finished",
          "One row per job: id, state, step, queue position, open streams (watchers), detached, age and prompt.\n"
          "--json prints the ListGenerationsResponse.",
          {}};
}

absl::StatusOr<int> RunGenerations(const Args&, Context& ctx) {
  CLIPSERVE_ASSIGN_OR_RETURN(GenerationClient * client, ctx.generation_client());
  CLIPSERVE_ASSIGN_OR_RETURN(v1::ListGenerationsResponse resp, client->List());
  if (ctx.json()) {
    ctx.out() << MessageToJson(resp) << "\n";
  } else {
    ctx.out() << FormatGenerations(resp, absl::Now());
  }
  return 0;
}

}  // namespace

std::vector<Verb> GenerationVerbs() {
  return {{GenerateSpec(), RunGenerate},
          {WatchSpec(), RunWatch},
          {CancelSpec(), RunCancel},
          {GenerationsSpec(), RunGenerations}};
}

absl::StatusOr<std::pair<uint32_t, uint32_t>> ParseSize(absl::string_view flag, absl::string_view value) {
  const std::vector<absl::string_view> parts = absl::StrSplit(value, absl::ByAnyChar("xX"));
  uint32_t w = 0, h = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &w) || !absl::SimpleAtoi(parts[1], &h) || w == 0 || h == 0 ||
      w > 65535 || h > 65535) {
    return UsageError(absl::StrCat("--", flag, " must be WIDTHxHEIGHT in pixels, e.g. 256x256, not '", value, "'"));
  }
  return std::make_pair(w, h);
}

std::string FrameExtension(const v1::Frame& frame) {
  switch (frame.format()) {
    case v1::IMAGE_FORMAT_PNG:
      return "png";
    case v1::IMAGE_FORMAT_JPEG:
      return "jpg";
    case v1::IMAGE_FORMAT_WEBP:
      return "webp";
    default:
      break;
  }
  const std::string& d = frame.data();
  if (absl::StartsWith(d, "\xFF\xD8\xFF")) return "jpg";
  if (d.size() >= 12 && absl::StartsWith(d, "RIFF") && d.compare(8, 4, "WEBP") == 0) return "webp";
  return "png";
}

std::string FrameFileName(uint32_t step, const v1::Frame& frame) {
  return absl::StrFormat("frame_%d.%s", step, FrameExtension(frame));
}

std::string FormatShortDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const int64_t s = std::llround(seconds);
  if (s < 60) return absl::StrCat(s, "s");
  if (s < 3600) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  return absl::StrFormat("%dh%02dm", s / 3600, s % 3600 / 60);
}

std::string FormatProgressLine(const v1::GenerationProgress& progress, uint32_t total_steps) {
  const uint32_t step = progress.step();
  std::string out = absl::StrCat("step ", step);
  if (total_steps > 0) {
    constexpr uint32_t kBar = 20;
    const uint32_t filled = std::min<uint64_t>(kBar, uint64_t{step} * kBar / total_steps);
    std::string bar(kBar, ' ');
    std::fill(bar.begin(), bar.begin() + filled, '=');
    if (step < total_steps && filled < kBar) bar[filled] = '>';
    absl::StrAppend(&out, "/", total_steps, " [", bar, "]");
  }
  absl::StrAppend(&out, absl::StrFormat(" loss %.3f sim %.3f", progress.loss(), progress.similarity()));
  const double elapsed = progress.elapsed_seconds();
  if (step > 0 && elapsed > 0) {
    const double rate = step / elapsed;
    absl::StrAppend(&out, absl::StrFormat(" %.1f steps/s", rate));
    if (total_steps > 0) {
      absl::StrAppend(&out, " ETA ", FormatShortDuration(step >= total_steps ? 0 : (total_steps - step) / rate));
    }
  } else {
    absl::StrAppend(&out, " -- steps/s", total_steps > 0 ? " ETA --" : "");
  }
  return out;
}

std::string FormatQueuedLine(const v1::GenerationAccepted& accepted) {
  return absl::StrCat("queued: position ", accepted.queue_position(), " (job ", accepted.job_id(), ")");
}

std::string GenerationStateName(v1::GenerationState state) {
  std::string name = v1::GenerationState_Name(state);
  constexpr absl::string_view kPrefix = "GENERATION_STATE_";
  if (absl::StartsWith(name, kPrefix)) name = name.substr(kPrefix.size());
  if (name.empty()) name = absl::StrCat("state ", static_cast<int>(state));
  return absl::AsciiStrToLower(name);
}

std::string FormatGenerations(const v1::ListGenerationsResponse& response, absl::Time now) {
  if (response.generations().empty()) return "no generations\n";
  Table table({{"job"},
               {"state"},
               {"step", Table::Align::kRight},
               {"queue", Table::Align::kRight},
               {"watchers", Table::Align::kRight},
               {"detach"},
               {"age", Table::Align::kRight},
               {"prompt"}});
  for (const v1::GenerationInfo& g : response.generations()) {
    const double age = absl::ToDoubleSeconds(
        now - absl::FromUnixNanos(static_cast<int64_t>(std::llround(g.created_unix_seconds() * 1e9))));
    table.AddRow({g.job_id(), GenerationStateName(g.state()), absl::StrCat(g.step(), "/", g.total_steps()),
                  g.queue_position() > 0 ? absl::StrCat(g.queue_position()) : "-", absl::StrCat(g.watchers()),
                  g.detach() ? "yes" : "", g.created_unix_seconds() > 0 ? FormatShortDuration(std::max(0.0, age)) : "-",
                  Ellipsize(g.prompt(), 50)});
  }
  return table.Render(0);
}

}  // namespace clipserve::client
