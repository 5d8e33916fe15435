-- back-to-tmall: habitual platform Tmall (most paid orders; ties: latest, then name), last paid
-- purchase 30 to 60 local days ago, reachable on WeCom or SMS, not tagged do_not_disturb.
-- The habitual platform needs every paid order: one aggregation per (member, platform), one pass.
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
WHERE s.habitual_platform = 'tmall'
  AND s.last_purchase_at >= :d60 AND s.last_purchase_at < :d29
  AND ((m.wecom_external_userid IS NOT NULL AND m.wecom_external_userid <> ''
        AND m.wecom_staff_userid IS NOT NULL AND m.wecom_staff_userid <> '')
       OR (m.phone IS NOT NULL AND m.phone <> '' AND m.sms_opt_out = false))
  AND NOT EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.member_id AND t.tag = 'do_not_disturb')
ORDER BY m.member_id
