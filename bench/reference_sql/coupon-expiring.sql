-- coupon-expiring: an issued, unredeemed coupon that expires after now and before the end of the
-- third local day from today; not tagged do_not_disturb. Candidates from the expires_at index.
WITH candidates AS (
    SELECT DISTINCT c.member_id
    FROM coupons c
    WHERE c.expires_at > :at AND c.expires_at < :dm4
      AND (c.issued_at IS NULL OR c.issued_at <= :at)
      AND (c.redeemed_at IS NULL OR c.redeemed_at > :at)
),
per_platform AS (
    SELECT o.member_id, o.platform, count(*) AS n, sum(o.amount_fen) AS fen, max(o.paid_at) AS last_paid_at
    FROM orders o JOIN candidates c ON c.member_id = o.member_id
    WHERE o.status = 'paid' AND o.paid_at IS NOT NULL AND o.paid_at <= :at
    GROUP BY o.member_id, o.platform
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
FROM candidates c
JOIN members m ON m.member_id = c.member_id
LEFT JOIN stats s ON s.member_id = m.member_id
WHERE NOT EXISTS (SELECT 1 FROM member_tags t WHERE t.member_id = m.member_id AND t.tag = 'do_not_disturb')
ORDER BY m.member_id
