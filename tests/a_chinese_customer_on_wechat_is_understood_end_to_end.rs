//! Chinese through the whole path: three participant processes train a fast-tier intent model under
//! secure aggregation on Chinese customer-service utterances (the tier's features split CJK text into
//! characters and character n-grams, so nothing is English-specific); then a customer writes on WeChat
//! (an `openid`) in Chinese, the desk answers with the right intent and routes by a rule whose reply
//! template is Chinese, the same customer calls by phone and lands in the same session, the DPO reads the
//! history with the text intact (sealed and opened as UTF-8), and `POST /v1/intent` labels each held-out
//! sentence correctly.
//!
//! No public Chinese customer-service dataset ships with Hearth, so the 60 training utterances (12 for
//! each of 5 intents) and the 5 held-out ones below were written for this test; they are part of the
//! project, under its licence. The encoder tier (all-MiniLM-L6-v2) is English-only: Chinese is the fast
//! tier's (README, the intent tiers).

mod common;

use common::*;
use hearth_models::Example;
use serde_json::{json, Value};

const TRAIN: [(&str, [&str; 12]); 5] = [
    (
        "check_balance",
        [
            "我想查一下我的账户余额",
            "帮我查询余额",
            "我卡里还有多少钱",
            "请问我的余额是多少",
            "查询一下储蓄卡余额",
            "我的账户里还剩多少钱",
            "想知道信用卡可用额度和余额",
            "余额查询",
            "能告诉我现在的余额吗",
            "我的钱包余额是多少",
            "看一下账户还有多少钱",
            "怎么查余额",
        ],
    ),
    (
        "report_lost_card",
        [
            "我的银行卡丢了",
            "信用卡丢了怎么办",
            "我要挂失银行卡",
            "卡被偷了，请帮我冻结",
            "钱包丢了，里面有我的卡",
            "请马上挂失我的借记卡",
            "我找不到我的信用卡了",
            "银行卡遗失需要挂失",
            "卡丢了，帮我冻结一下",
            "如何办理银行卡挂失",
            "我的卡好像被人盗了",
            "紧急挂失信用卡",
        ],
    ),
    (
        "refund_status",
        [
            "我的退款到账了吗",
            "退款进度怎么样了",
            "申请的退款什么时候到",
            "查一下退款状态",
            "退货以后钱还没退回来",
            "退款已经一周了还没收到",
            "我想知道退款处理到哪一步了",
            "退款多久能到账",
            "订单退款还没到",
            "请帮我查询退款进度",
            "为什么我的退款还没有处理",
            "退款申请审核通过了吗",
        ],
    ),
    (
        "change_address",
        [
            "我要修改收货地址",
            "怎么更改我的地址",
            "我搬家了，需要更新地址",
            "帮我把地址改成新的",
            "订单的配送地址写错了",
            "更新账户的联系地址",
            "地址填错了能改吗",
            "请修改我的邮寄地址",
            "我想换一个收货地址",
            "新地址怎么填写",
            "帮我改一下送货地址",
            "更改账单地址",
        ],
    ),
    (
        "talk_to_agent",
        [
            "转人工客服",
            "我要和真人说话",
            "请帮我转接人工",
            "有没有人工服务",
            "我不想跟机器人聊",
            "找一个客服人员",
            "人工客服在哪里",
            "让真人来处理",
            "请接通人工坐席",
            "我要投诉，转人工",
            "可以找客服经理吗",
            "帮我联系人工客服",
        ],
    ),
];

/// Sentences not in the training data, one per intent.
const HELD_OUT: [(&str, &str); 5] = [
    ("check_balance", "麻烦帮我看看账户余额还有多少"),
    ("report_lost_card", "我的信用卡不见了，请帮我挂失"),
    ("refund_status", "上周申请的退款到现在还没到账"),
    ("change_address", "我刚搬家，请把收货地址改一下"),
    ("talk_to_agent", "别让机器人回答了，我要人工客服"),
];

const OPENID: &str = "o6_bmjrPTlm6_zh01";
const PHONE: &str = "+86 138 0013 8000";
const REPLY: &str = "您的挂失申请已收到，正在为您转接人工客服。";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chinese_customer_on_wechat_is_understood_end_to_end() {
    let examples: Vec<Example> = TRAIN
        .iter()
        .flat_map(|(label, texts)| {
            texts.iter().map(|t| Example { text: t.to_string(), label: label.to_string(), embedding: None })
        })
        .collect();
    // Three institutions, each with every third utterance.
    let shards: Vec<Vec<Example>> =
        (0..3).map(|i| examples.iter().skip(i).step_by(3).cloned().collect()).collect();
    let cluster = Cluster::start(&shards);
    let labels = labels_of(&examples);
    let mut job = intent_job("zh-intent", labels.clone(), 12, 3);
    job.train.as_mut().unwrap().local_epochs = 5;
    cluster.run(job).await;

    let addr = cluster.participant_addr("inst-1");
    let (app, dpo) = (cluster.tls("inst-1/app"), cluster.tls("inst-1/dpo"));
    // The participant serves the job's final model once it has taken it.
    let served = serving(&addr, &app, "zh-intent", 12).await;
    assert_eq!(served, 12, "inst-1 never served the Chinese model:\n{}", cluster.log("inst-1"));

    // A rule in Chinese: a lost card goes to a person at once, with a Chinese reply.
    let rules = cluster.data_dir("inst-1").join("rules.toml");
    let mut text = std::fs::read_to_string(&rules).unwrap();
    assert!(
        text.contains("[templates]\n") && text.contains("[[rule]]\n"),
        "the default rules changed:\n{text}"
    );
    text = text.replacen("[templates]\n", &format!("[templates]\nlost_card_zh = \"{REPLY}\"\n"), 1);
    text = text.replacen(
        "[[rule]]\n",
        "[[rule]]\nname = \"挂失-转人工\"\nwhen = { intent = [\"report_lost_card\"] }\n\
         then = { route = \"human\", priority = \"urgent\", reply = \"lost_card_zh\" }\n\n[[rule]]\n",
        1,
    );
    std::fs::write(&rules, text).unwrap();
    let (s, v) = call_json(&addr, &dpo, "POST", "/v1/admin/rules/reload", Value::Null).await;
    assert_eq!(s, 200, "{v}");

    // 1. WeChat, in Chinese.
    let lost = HELD_OUT[1].1;
    let (s, first) = call_json(
        &addr,
        &app,
        "POST",
        "/v1/messages",
        json!({ "channel": "wechat", "identifiers": { "openid": OPENID }, "text": lost }),
    )
    .await;
    assert_eq!(s, 200, "{first}");
    assert_eq!(first["intent"]["label"], "report_lost_card", "{first}");
    assert_eq!(first["intent"]["tier"], "fast", "{first}");
    assert_eq!(first["route"], "human", "{first}");
    assert_eq!(first["priority"], "urgent", "{first}");
    assert_eq!(first["replies"], json!([REPLY]), "{first}");
    assert_eq!(first["rules_fired"][0], "挂失-转人工", "{first}");
    let id = first["customer_id"].as_str().unwrap().to_string();

    // 2. The same customer by phone, naming the WeChat account: one customer, one session.
    let refund = HELD_OUT[2].1;
    let (s, second) = call_json(
        &addr,
        &app,
        "POST",
        "/v1/messages",
        json!({ "channel": "phone", "identifiers": { "openid": OPENID, "phone": PHONE }, "text": refund }),
    )
    .await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(second["customer_id"], id.as_str(), "the openid links the channels: {second}");
    assert_eq!(second["session"]["continued"], true, "{second}");
    assert_eq!(second["session"]["channels"], json!(["wechat", "phone"]), "{second}");
    assert_eq!(second["intent"]["label"], "refund_status", "{second}");

    // 3. The DPO reads the history: the Chinese text as written.
    let (s, h) = call_json(&addr, &dpo, "GET", &format!("/v1/customers/{id}/history"), Value::Null).await;
    assert_eq!(s, 200, "{h}");
    let texts: Vec<&str> =
        h["messages"].as_array().unwrap().iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, [lost, refund], "{h}");

    // 4. The intent API labels every held-out sentence.
    for (label, sentence) in HELD_OUT {
        let (s, v) = call_json(&addr, &app, "POST", "/v1/intent", json!({ "text": sentence })).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["label"], label, "{sentence}: {v}");
    }
}
