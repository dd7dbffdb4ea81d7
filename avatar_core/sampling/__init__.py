"""The avatar sampler: schedule, guidance, deep cache, long-video windows and the loop."""

from .deepcache import DeepCacheConfig, FrameTokenCache, cached_steps
from .guidance import GuidanceConfig, StepGuidance, combine, step_guidance
from .sampler import (
                      AvatarConditioning,
                      Denoiser,
                      SamplerCallbacks,
                      SamplerConfig,
                      SampleResult,
                      SamplerProgress,
                      SamplingCancelled,
                      TextConditioning,
                      initial_noise,
                      sample_avatar,
)
from .schedule import FlowSchedule, euler_step, flow_schedule
from .windows import ClipPlan, WindowConfig, plan_clip

__all__ = [
    "AvatarConditioning", "ClipPlan", "DeepCacheConfig", "Denoiser", "FlowSchedule", "FrameTokenCache",
    "GuidanceConfig", "SampleResult", "SamplerCallbacks", "SamplerConfig", "SamplerProgress", "SamplingCancelled",
    "StepGuidance", "TextConditioning", "WindowConfig", "cached_steps", "combine", "euler_step", "flow_schedule",
    "initial_noise", "plan_clip", "sample_avatar", "step_guidance",
]
