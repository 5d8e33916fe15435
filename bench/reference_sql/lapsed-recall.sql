-- lapsed-recall: last paid purchase 90 to 180 local days ago, average paid order ≥ ¥150 (compared
-- exactly in fen: total ≥ 15000 × count), reachable by phone for calls, not tagged do_not_disturb.
WITH per_platform AS (
    SELECT member_id, platform, count(*) AS n, sum(amount_fen) AS fen, max(paid_at) AS last_paid_at
    FROM orders
    WHERE status = 'paid' AND paid_at IS NOT NULL AND paid_at <= :at
    GROUP BY member_id, platform
),
stats AS (
    SELECT member_id, sum(n) AS order_count, sum(fen) AS total_fen, max(last_paid_at) AS last_purchase_at,
           max(CASE WHEN rk = 1 THEN platform END) AS habitual_platform
    FROM (SELECT p.*, row_number() OVER (PARTITION BY member_id ORDER BY n DESC, last_paid_at DESC, platform) AS rk
          FROM per_platform p) ranked
    GROUP BY member_id
)
SELECT m.member_id, m.phone, m.sms_opt_out, m.call_opt_out, m.wecom_external_userid, m.wecom_staff_userid,
       m.oa_openid, m.oa_subscribed, s.order_count, s.total_fen, s.habitual_platform
FROM stats s
JOIN members m ON m.member_id = s.member_id
WHERE s.last_purchase_at >= :d180 AND s.last_purchase_at < :d89
  AND s.order_count > 0 AND s.total_fen >= 15000 * s.order_count
  AND m.phone IS NOT NULL AND m.phone <> '' AND m.call_opt_out = false
  AND NOT EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.member_id AND t.tag = 'do_not_disturb')
ORDER BY m.member_id
