// The review console's strings in English and Simplified Chinese. The language is picked as on
// the main page (js/i18n.js: `?lang=`, else the browser's first preference) and can be switched
// in the header. Codes from the API (reason codes, states, end reasons, score names) stay as
// they are: operators search for them.

import { pickLanguage } from './i18n.js';

export const STRINGS = {
  en: {
    'title': 'vericall review',
    'brand.sub': 'review',
    'lang.label': 'Language',
    'logout': 'Sign out',
    'login.title': 'Sign in to review',
    'login.username': 'Username',
    'login.password': 'Password',
    'login.submit': 'Sign in',
    'login.missing': 'Enter your username and password.',
    'login.wrong': 'Wrong username or password.',
    'login.too_many': 'Too many attempts. Wait a moment and try again.',
    'login.failed': 'Sign-in failed: {message}',
    'login.expired': 'Your sign-in has expired. Sign in again.',
    'login.check_failed': 'Could not check the sign-in: {message}',
    'logout.failed': 'Sign-out failed: {message}',
    'who.named': 'Signed in as {name}',
    'who.anonymous': 'Signed in',
    'error.unreachable': 'The server cannot be reached. Check the connection and try again.',
    'queue.title': 'Queue',
    'queue.refresh': 'Refresh',
    'queue.intro': 'Sessions waiting for a decision, oldest first.',
    'queue.label': 'Sessions waiting for review',
    'queue.empty': 'Nothing to review.',
    'queue.failed': 'Queue could not be loaded: {message}',
    'subject.none': '(no subject)',
    'detail.empty': 'Select a session from the queue.',
    'detail.loading': 'Loading…',
    'detail.missing': 'This session does not exist (any more).',
    'detail.failed': 'Session could not be loaded: {message}',
    'status.none': 'no verdict',
    'status.passed': 'passed',
    'status.failed': 'failed',
    'status.needs_review': 'needs review',
    'status.cancelled': 'cancelled',
    'status.expired': 'expired',
    'status.updated': 'updated',
    'meta.session': 'Session',
    'meta.support_ref': 'Support reference',
    'lookup.label': "Find by the caller's support reference",
    'lookup.find': 'Find',
    'lookup.none': 'No session has the reference {ref}.',
    'lookup.invalid': 'A support reference is 8 letters and digits, e.g. K7Q2-M9XD.',
    'lookup.failed': 'The lookup failed: {message}',
    'meta.state': 'State',
    'meta.created': 'Created',
    'meta.connected': 'Connected',
    'meta.ended': 'Ended',
    'meta.end_reason': 'End reason',
    'meta.call_length': 'Call length',
    'value.yes': 'yes',
    'value.no': 'no',
    'age.s': '{n} s ago',
    'age.min': '{n} min ago',
    'age.h': '{n} h ago',
    'age.d': '{n} d ago',
    'unit.s': 's',
    'unit.min': 'min',
    'reasons.title': 'Reasons',
    'reasons.retryable': 'retryable',
    'reasons.none': 'No reasons given.',
    'scores.title': 'Scores',
    'scores.caption': 'Verdict scores',
    'scores.name': 'Score',
    'scores.value': 'Value',
    'scores.empty': 'No scores.',
    'face.label': 'ID photo comparison',
    'face.value': 'ID photo similarity {similarity} vs threshold {threshold}',
    'face.above': 'at or above threshold',
    'face.below': 'below threshold',
    'face.frames': '{n} frames compared',
    'face.none': 'No ID photo comparison in this session.',
    'frames.title': 'Evidence frames',
    'frames.empty': 'No frames stored.',
    'frames.alt': 'Evidence frame {n}: {name}',
    'frames.open': 'Open full size',
    'network.title': 'Network',
    'network.none': 'No network summary for this session.',
    'network.summary': 'Summary',
    'network.track': 'Track {n}',
    'network.empty': 'The network summary is empty.',
    'timeline.title': 'Timeline',
    'audit.title': 'Audit log',
    'audit.empty': 'No decisions yet.',
    'audit.by': 'by {name}',
    'audit.unknown': 'unknown',
    'audit.action.view': 'view',
    'audit.action.approve': 'approve',
    'audit.action.reject': 'reject',
    'decision.title': 'Decision',
    'decision.note': 'Note (required: what you checked and why)',
    'decision.approve': 'Approve',
    'decision.reject': 'Reject',
    'decision.already': 'Already decided: {status}. Nothing to do.',
    'decision.note_required': 'A note is required: write what you checked and why.',
    'decision.approving': 'Approving…',
    'decision.rejecting': 'Rejecting…',
    'decision.approved': 'Approved. Verdict is now {status}.',
    'decision.rejected': 'Rejected. Verdict is now {status}.',
    'decision.conflict': 'Someone already decided this session; it is no longer waiting for review. Reloaded.',
    'decision.note_refused': 'The note was not accepted: {message}',
    'decision.failed': 'The decision failed: {message}',
  },
  'zh-CN': {
    'title': 'vericall 审核台',
    'brand.sub': '审核台',
    'lang.label': '语言',
    'logout': '退出登录',
    'login.title': '登录审核台',
    'login.username': '用户名',
    'login.password': '密码',
    'login.submit': '登录',
    'login.missing': '请输入用户名和密码。',
    'login.wrong': '用户名或密码错误。',
    'login.too_many': '尝试次数过多，请稍后再试。',
    'login.failed': '登录失败：{message}',
    'login.expired': '登录已过期，请重新登录。',
    'login.check_failed': '无法检查登录状态：{message}',
    'logout.failed': '退出登录失败：{message}',
    'who.named': '已登录：{name}',
    'who.anonymous': '已登录',
    'error.unreachable': '无法连接服务器。请检查网络后重试。',
    'queue.title': '待审队列',
    'queue.refresh': '刷新',
    'queue.intro': '等待决定的会话，最早的在前。',
    'queue.label': '等待审核的会话',
    'queue.empty': '没有待审核的会话。',
    'queue.failed': '无法加载队列：{message}',
    'subject.none': '（无用户标识）',
    'detail.empty': '请从队列中选择一个会话。',
    'detail.loading': '加载中…',
    'detail.missing': '此会话不存在（或已删除）。',
    'detail.failed': '无法加载会话：{message}',
    'status.none': '无判定',
    'status.passed': '通过',
    'status.failed': '未通过',
    'status.needs_review': '待人工审核',
    'status.cancelled': '已取消',
    'status.expired': '已过期',
    'status.updated': '已更新',
    'meta.session': '会话',
    'meta.support_ref': '客服编号',
    'lookup.label': '按用户提供的客服编号查找',
    'lookup.find': '查找',
    'lookup.none': '没有编号为 {ref} 的会话。',
    'lookup.invalid': '客服编号为 8 位字母和数字，例如 K7Q2-M9XD。',
    'lookup.failed': '查找失败：{message}',
    'meta.state': '状态',
    'meta.created': '创建时间',
    'meta.connected': '连接时间',
    'meta.ended': '结束时间',
    'meta.end_reason': '结束原因',
    'meta.call_length': '通话时长',
    'value.yes': '是',
    'value.no': '否',
    'age.s': '{n} 秒前',
    'age.min': '{n} 分钟前',
    'age.h': '{n} 小时前',
    'age.d': '{n} 天前',
    'unit.s': '秒',
    'unit.min': '分',
    'reasons.title': '原因',
    'reasons.retryable': '可重试',
    'reasons.none': '未给出原因。',
    'scores.title': '评分',
    'scores.caption': '判定评分',
    'scores.name': '评分项',
    'scores.value': '数值',
    'scores.empty': '没有评分。',
    'face.label': '证件照比对',
    'face.value': '证件照相似度 {similarity}，阈值 {threshold}',
    'face.above': '达到或高于阈值',
    'face.below': '低于阈值',
    'face.frames': '比对了 {n} 帧',
    'face.none': '此会话没有证件照比对。',
    'frames.title': '证据帧',
    'frames.empty': '没有保存的帧。',
    'frames.alt': '证据帧 {n}：{name}',
    'frames.open': '查看原图',
    'network.title': '网络',
    'network.none': '此会话没有网络摘要。',
    'network.summary': '摘要',
    'network.track': '轨道 {n}',
    'network.empty': '网络摘要为空。',
    'timeline.title': '时间线',
    'audit.title': '审计日志',
    'audit.empty': '尚无决定。',
    'audit.by': '操作人：{name}',
    'audit.unknown': '未知',
    'audit.action.view': '查看',
    'audit.action.approve': '批准',
    'audit.action.reject': '拒绝',
    'decision.title': '决定',
    'decision.note': '备注（必填：您检查了什么，为什么这样决定）',
    'decision.approve': '批准',
    'decision.reject': '拒绝',
    'decision.already': '已有决定：{status}。无需操作。',
    'decision.note_required': '必须填写备注：写明您检查了什么，为什么这样决定。',
    'decision.approving': '正在批准…',
    'decision.rejecting': '正在拒绝…',
    'decision.approved': '已批准。判定现为：{status}。',
    'decision.rejected': '已拒绝。判定现为：{status}。',
    'decision.conflict': '此会话已由他人决定，不再等待审核。已重新加载。',
    'decision.note_refused': '备注未被接受：{message}',
    'decision.failed': '决定未能提交：{message}',
  },
};

export const LANGUAGES = Object.keys(STRINGS);

let current = 'en';

export function setLanguage(lang) {
  current = STRINGS[lang] ? lang : 'en';
  document.documentElement.lang = current;
}

export function language() {
  return current;
}

export function initialLanguage() {
  return pickLanguage();
}

/// The string for `key` with `{name}` placeholders filled from `vars`.
export function t(key, vars = {}) {
  const s = STRINGS[current][key] ?? STRINGS.en[key];
  if (s === undefined) {
    console.error(`vericall review: missing string ${key}`);
    return key;
  }
  return s.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

/// A verdict status in words (an unknown one as its code with spaces).
export function statusText(status) {
  if (!status) return t('status.none');
  const key = `status.${status}`;
  return STRINGS.en[key] ? t(key) : String(status).replace(/_/g, ' ');
}

/// An audit action in words (an unknown one as its code).
export function actionText(action) {
  const key = `audit.action.${action}`;
  return STRINGS.en[key] ? t(key) : action;
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
