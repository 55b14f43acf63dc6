// Page strings in English and Simplified Chinese. Reason hints are not here: they come from the
// server's catalog (GET /v1/reasons), the single source of truth for reason codes.
//
// The language is `?lang=` when given (en or zh-CN), otherwise the browser's first preference.
// A test loads every screen in zh-CN and fails on any visible Latin word that is not a name.

export const STRINGS = {
  en: {
    'title': 'Video verification',
    'precheck.title': 'Before we start',
    'precheck.intro': 'We check your camera, microphone and connection. Nothing is recorded yet.',
    'precheck.requirements': 'What you need',
    'precheck.start': 'Start verification',
    'precheck.ready': 'All set. Find a bright, quiet place, hold the phone at eye level and press Start.',
    'precheck.mic_quiet': 'We can barely hear you. Check that your microphone is not muted.',
    'precheck.slow_network': 'Your connection is slow ({ms} ms). The check may be interrupted; Wi-Fi helps.',
    'precheck.offline': 'You appear to be offline. Connect to the internet and try again.',
    'precheck.no_session': 'This link is incomplete. Open the verification link you were sent again.',
    'check.browser': 'Browser support',
    'check.camera': 'Camera',
    'check.microphone': 'Microphone',
    'check.mic_level': 'Microphone level',
    'check.network': 'Connection',
    'check.network_ms': 'Connection ({ms} ms)',
    'call.title': 'Verification in progress',
    'call.progress': 'Steps',
    'call.step': 'Step {n} of {total}',
    'call.step_done': 'Step {n}: done',
    'call.step_failed': 'Step {n}: not done',
    'call.step_pending': 'Step {n}: not started',
    'call.connecting': 'Connecting…',
    'call.reconnecting': 'Connection lost. Reconnecting…',
    'call.connected': 'Connected',
    'call.get_ready': 'Put your face inside the oval and look at the camera.',
    'call.well_done': 'Well done.',
    'call.paused': 'Paused until this is fixed:',
    'call.finishing': 'Checking…',
    'net.excellent': 'Connection: excellent',
    'net.good': 'Connection: good',
    'net.fair': 'Connection: fair',
    'net.poor': 'Connection: poor',
    'action.turn_left': 'Slowly turn your head to your left',
    'action.turn_right': 'Slowly turn your head to your right',
    'action.look_up': 'Slowly raise your chin and look up',
    'action.look_down': 'Slowly lower your chin and look down',
    'action.blink': 'Blink both eyes',
    'action.open_mouth': 'Open your mouth wide, then close it',
    'action.move_closer': 'Move your face closer to the camera',
    'action.show_document': 'Hold the front of your ID card up to the camera',
    'action.screen_light': 'Look at the screen and keep still while its colour changes',
    'precheck.no_flash': 'Skip the changing-colour light (if flashing light affects you). A member of staff will review your verification instead.',
    'action.speak_digits': 'Say these digits aloud: {digits}',
    'practice.badge': 'Practice',
    'practice.note': 'This is a practice run: nothing is recorded and it does not count as an attempt.',
    'result.practice.title': 'Practice finished',
    'result.practice.passed': 'You would have passed. When you are ready, start the real verification from the app.',
    'result.practice.review': 'A real verification like this one would go to a person for review. Try the tips below, then start the real verification from the app.',
    'result.practice.failed': 'This would not have passed yet. Here is what to fix before the real verification:',
    'result.practice.steps': 'Steps done: {passed} of {total}.',
    'result.passed.title': 'Verification passed',
    'result.passed.text': 'Thank you. You can return to the app.',
    'result.failed.title': 'Verification not passed',
    'result.failed.text': 'Here is what went wrong and what to do:',
    'result.needs_review.title': 'Under review',
    'result.needs_review.text': 'We need a person to look at your verification. You will be notified of the result.',
    'result.cancelled.title': 'Verification cancelled',
    'result.cancelled.text': 'The verification was stopped before it finished.',
    'result.expired.title': 'This link has expired',
    'result.expired.text': 'Start a new verification from the app.',
    'result.device.title': 'We need your camera and microphone',
    'result.device.text': 'The check cannot start yet:',
    'result.retry': 'Try again',
    'result.retry_new': 'Return to the app to start again.',
    'result.reference': 'Reference for customer service:',
    'error.connect': 'We could not connect to the verification service. Check your connection and try again.',
    'error.generic': 'Something went wrong. Please try again.',
  },
  'zh-CN': {
    'title': '视频验证',
    'precheck.title': '开始之前',
    'precheck.intro': '我们会检查您的摄像头、麦克风和网络连接。此时不会录制任何内容。',
    'precheck.requirements': '您需要准备什么',
    'precheck.start': '开始验证',
    'precheck.ready': '准备就绪。请在明亮安静的地方，把手机举到与眼睛齐平，然后点击开始。',
    'precheck.mic_quiet': '我们几乎听不到您的声音。请检查麦克风是否被静音。',
    'precheck.slow_network': '您的网络较慢（{ms} 毫秒）。验证可能会中断，建议使用无线网络。',
    'precheck.offline': '您似乎没有联网。请连接网络后重试。',
    'precheck.no_session': '此链接不完整。请重新打开您收到的验证链接。',
    'check.browser': '浏览器支持',
    'check.camera': '摄像头',
    'check.microphone': '麦克风',
    'check.mic_level': '麦克风音量',
    'check.network': '网络连接',
    'check.network_ms': '网络连接（{ms} 毫秒）',
    'call.title': '正在验证',
    'call.progress': '步骤',
    'call.step': '第 {n} 步，共 {total} 步',
    'call.step_done': '第 {n} 步：已完成',
    'call.step_failed': '第 {n} 步：未完成',
    'call.step_pending': '第 {n} 步：未开始',
    'call.connecting': '正在连接…',
    'call.reconnecting': '连接已断开，正在重新连接…',
    'call.connected': '已连接',
    'call.get_ready': '请将脸放在椭圆框内，并看向摄像头。',
    'call.well_done': '做得好。',
    'call.paused': '已暂停，请先解决以下问题：',
    'call.finishing': '正在检查…',
    'net.excellent': '网络：极好',
    'net.good': '网络：良好',
    'net.fair': '网络：一般',
    'net.poor': '网络：较差',
    'action.turn_left': '请慢慢向左转头',
    'action.turn_right': '请慢慢向右转头',
    'action.look_up': '请慢慢抬起下巴，向上看',
    'action.look_down': '请慢慢低下下巴，向下看',
    'action.blink': '请眨眨双眼',
    'action.open_mouth': '请张大嘴巴，然后闭上',
    'action.move_closer': '请把脸靠近摄像头',
    'action.show_document': '请将身份证人像面对准摄像头',
    'action.screen_light': '请看着屏幕，在颜色变化时保持不动',
    'precheck.no_flash': '跳过变色灯光检测（如果闪烁的光线会让您不适）。工作人员将改为人工审核您的认证。',
    'action.speak_digits': '请大声读出这些数字：{digits}',
    'practice.badge': '练习',
    'practice.note': '这是一次练习：不会保存任何内容，也不计入验证次数。',
    'result.practice.title': '练习结束',
    'result.practice.passed': '按这次的表现，正式验证可以通过。准备好后，请在应用中开始正式验证。',
    'result.practice.review': '这样的正式验证会交由人工审核。请参考下面的提示，然后在应用中开始正式验证。',
    'result.practice.failed': '这次还不能通过。正式验证前请先解决以下问题：',
    'result.practice.steps': '已完成步骤：{passed}/{total}。',
    'result.passed.title': '验证通过',
    'result.passed.text': '谢谢。您可以返回应用了。',
    'result.failed.title': '验证未通过',
    'result.failed.text': '原因和解决办法如下：',
    'result.needs_review.title': '人工审核中',
    'result.needs_review.text': '您的验证需要人工审核，结果会另行通知您。',
    'result.cancelled.title': '验证已取消',
    'result.cancelled.text': '验证在完成前被中止。',
    'result.expired.title': '此链接已过期',
    'result.expired.text': '请在应用中重新发起验证。',
    'result.device.title': '需要使用您的摄像头和麦克风',
    'result.device.text': '验证暂时无法开始：',
    'result.retry': '重试',
    'result.retry_new': '请返回应用重新开始。',
    'result.reference': '联系客服时请提供此编号：',
    'error.connect': '无法连接到验证服务。请检查网络后重试。',
    'error.generic': '出了点问题，请重试。',
  },
};

export const LANGUAGES = Object.keys(STRINGS);

/// `?lang=` if it names a supported language, else the browser's preference (any zh → zh-CN).
export function pickLanguage(search = location.search, preferred = navigator.languages || [navigator.language]) {
  const asked = new URLSearchParams(search).get('lang');
  if (asked) {
    const hit = LANGUAGES.find((l) => l.toLowerCase() === asked.toLowerCase());
    if (hit) return hit;
    if (asked.toLowerCase().startsWith('zh')) return 'zh-CN';
  }
  for (const p of preferred) {
    if (!p) continue;
    if (p.toLowerCase().startsWith('zh')) return 'zh-CN';
    if (p.toLowerCase().startsWith('en')) return 'en';
  }
  return 'en';
}

let current = 'en';

export function setLanguage(lang) {
  current = STRINGS[lang] ? lang : 'en';
  document.documentElement.lang = current;
}

export function language() {
  return current;
}

/// The string for `key` with `{name}` placeholders filled from `vars`.
export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.en[key];
  if (s === undefined) {
    console.error(`vericall: missing string ${key}`);
    return key;
  }
  return s.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

/// Fills `[data-i18n]` text and `[data-i18n-attr="attr:key;attr:key"]` attributes under `root`.
export function translate(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':');
      if (attr && key) el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
  document.title = t('title');
}
